// Which recipe each camera inspects under, and what a recipe means for a frame: its ROI, its
// post-processing options, its number. Follows the configuration as pushes change it.
import type { Frame } from '../capture/frame.js';
import { roiFitsFrame, roiMisfit } from '../capture/frame.js';
import type { AppConfig } from '../config/load.js';
import { cameraWithRecipe, configuredRecipe, recipeExists, recipeNumber, withRecipe, type RecipeName } from '../config/recipes.js';
import { postprocessOptions, type PostprocessOptions } from './postprocess.js';

export class RecipeChoice {
  /** The recipe each camera inspects under now (absent: its configured one). */
  private readonly selected = new Map<string, RecipeName>();
  private readonly options = new Map<RecipeName, PostprocessOptions>();

  constructor(private config: AppConfig) {}

  update(config: AppConfig): void {
    this.config = config;
    this.options.clear();
    // A selection whose recipe is gone falls back to the camera's configured recipe.
    for (const [cameraId, recipe] of this.selected) if (!recipeExists(config, recipe)) this.selected.delete(cameraId);
  }

  active(cameraId: string): RecipeName {
    if (this.selected.has(cameraId)) return this.selected.get(cameraId)!;
    const camera = this.config.cameras.find((c) => c.id === cameraId);
    return camera ? configuredRecipe(camera) : null;
  }

  /** Select a recipe for a camera; why not (no such camera or recipe, or `refusal` of it), or null. */
  select(cameraId: string, recipe: RecipeName, refusal: (recipe: RecipeName) => string | null): string | null {
    if (!this.config.cameras.some((c) => c.id === cameraId)) return `no camera "${cameraId}" in the configuration`;
    if (!recipeExists(this.config, recipe)) return `no recipe named "${recipe}" (recipes: ${Object.keys(this.config.recipes).join(', ') || 'none'})`;
    const refused = refusal(recipe);
    if (refused !== null) return `recipe ${recipe} refused: ${refused}`;
    this.selected.set(cameraId, recipe);
    return null;
  }

  /** Give the frame its recipe's ROI; why it cannot be used on this frame, or null. */
  applyRoi(frame: Frame): string | null {
    const camera = this.config.cameras.find((c) => c.id === frame.cameraId);
    if (!camera || frame.recipe === null || frame.recipe === undefined) return null;
    const roi = cameraWithRecipe(this.config, camera, frame.recipe).roi;
    const size = { width: frame.image.cols, height: frame.image.rows };
    if (roi && !roiFitsFrame(roi, size)) return `recipe ${frame.recipe}: ${roiMisfit(roi, size)}`;
    frame.roi = roi;
    return null;
  }

  /** Post-processing options under a recipe (the base options for none). */
  postprocess(recipe: RecipeName): PostprocessOptions {
    let options = this.options.get(recipe);
    if (!options) {
      options = postprocessOptions(withRecipe(this.config, recipe));
      this.options.set(recipe, options);
    }
    return options;
  }

  /** `{recipeNumber}` when the config gives the recipe a number, else nothing. */
  number(recipe: RecipeName): { recipeNumber?: number } {
    const number = recipeNumber(this.config, recipe);
    return number === undefined ? {} : { recipeNumber: number };
  }
}
