// The models of all recipes, loaded together before they serve, so a recipe switch costs nothing
// but the next frame. A recipe whose model cannot be loaded (or does not fit under
// model.maxRecipeModels) is refused with its reason; the others serve.
import fs from 'node:fs';
import type { AppConfig } from '../config/load.js';
import { withRecipe, type RecipeName } from '../config/recipes.js';
import type { Logger } from '../shared/log.js';
import type { CradModel } from './model.js';

/** What the device status says of each recipe, and what the recipe models hold. */
export interface RecipeReport {
  recipes: Record<string, { model: string; state: 'ready' | 'refused'; error?: string }>;
  /** Model files loaded for recipes besides model.path: how many, their bytes on disk, and the bound. */
  models: { loaded: number; fileBytes: number; max: number };
}

export class RecipeModels {
  private constructor(
    /** Recipe name -> its model file; recipes on model.path are absent (they run on the base model). */
    private readonly pathOf: Map<string, string>,
    private readonly loaded: Map<string, CradModel>,
    private readonly refused: Map<string, string>,
    private readonly report: RecipeReport,
  ) {}

  /** Load every recipe model of `config` not already model.path; failures refuse their recipes. */
  static async load(config: AppConfig, load: (file: string) => Promise<CradModel>, log: Logger): Promise<RecipeModels> {
    const pathOf = new Map<string, string>();
    const loaded = new Map<string, CradModel>();
    const failed = new Map<string, string>();
    const refused = new Map<string, string>();
    const report: RecipeReport = { recipes: {}, models: { loaded: 0, fileBytes: 0, max: config.model.maxRecipeModels } };
    for (const name of Object.keys(config.recipes)) {
      const file = withRecipe(config, name).model.path;
      report.recipes[name] = { model: file, state: 'ready' };
      if (file === config.model.path) continue;
      pathOf.set(name, file);
      if (!loaded.has(file) && !failed.has(file)) {
        if (loaded.size >= config.model.maxRecipeModels) {
          failed.set(file, `model.maxRecipeModels (${config.model.maxRecipeModels}) models are loaded already`);
        } else {
          try {
            loaded.set(file, await load(file));
            report.models.fileBytes += fs.statSync(file).size;
          } catch (err) {
            failed.set(file, `model ${file} cannot be loaded: ${(err as Error).message}`);
          }
        }
      }
      const error = failed.get(file);
      if (error !== undefined) {
        refused.set(name, error);
        report.recipes[name] = { model: file, state: 'refused', error };
        log.error({ recipe: name, error }, 'recipe refused');
      }
    }
    report.models.loaded = loaded.size;
    return new RecipeModels(pathOf, loaded, refused, report);
  }

  /** The model a recipe runs on, or null for the base model (model.path). Refused recipes: null too; ask refusal() first. */
  model(name: RecipeName): CradModel | null {
    const file = name === null ? undefined : this.pathOf.get(name);
    return file === undefined ? null : this.loaded.get(file) ?? null;
  }

  /** Why a recipe cannot serve, or null when it can. */
  refusal(name: RecipeName): string | null {
    return name === null ? null : this.refused.get(name) ?? null;
  }

  status(): RecipeReport {
    return this.report;
  }

  /** Release the recipe models (after a replacement has taken over, or at stop). */
  async release(): Promise<void> {
    await Promise.allSettled([...this.loaded.values()].map((model) => model.release()));
  }

  /** No recipes: every frame runs on the base model. */
  static none(): RecipeModels {
    return new RecipeModels(new Map(), new Map(), new Map(), { recipes: {}, models: { loaded: 0, fileBytes: 0, max: 0 } });
  }
}
