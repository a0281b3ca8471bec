// Scoring frames outside the pipeline with what serves a camera now (its active recipe's model
// and post-processing options): the console's ROI check. One frame per model run, so the
// pipeline's batches take turns with it; no crops or overlays are made.
import type { Frame } from '../capture/frame.js';
import type { AppConfig } from '../config/load.js';
import { withRecipe } from '../config/recipes.js';
import type { FrameScorer } from '../console/roi-check.js';
import { postprocessFrame, postprocessOptions } from '../inference/postprocess.js';
import type { Pipeline } from '../pipeline.js';

export function frameScorer(pipeline: () => Pipeline, config: () => AppConfig): FrameScorer {
  return async (cameraId: string, frames: Frame[]) => {
    const serving = pipeline();
    const recipe = serving.activeRecipe(cameraId);
    const model = serving.recipeModels.model(recipe) ?? serving.latestModel;
    const options = postprocessOptions(withRecipe(config(), recipe));
    const post = { ...options, crops: { ...options.crops, enabled: false }, overlay: { ...options.overlay, enabled: false } };
    const results = [];
    for (const frame of frames) {
      const inference = await model.run([frame]);
      const result = postprocessFrame(inference, inference.frames[0]!, post);
      results.push({ verdict: result.verdict, normalized: result.normalized, raw: result.raw });
    }
    return results;
  };
}
