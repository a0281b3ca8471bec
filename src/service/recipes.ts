// Recipes at run time: every recipe's model loaded and held to its golden samples, the selection
// per camera (recipe/set, or a trigger that names one) kept across restarts and audited.
import type { AppConfig } from '../config/load.js';
import { enabledCameraIds } from '../config/load.js';
import { recipeExists, recipeModelConfig, type RecipeName } from '../config/recipes.js';
import type { AuditActor } from '../control/actor.js';
import { RecipeSelectionStore, type RecipeResponse, type RecipeSetRequest } from '../control/recipes.js';
import { RecipeModels } from '../inference/recipes.js';
import type { Pipeline } from '../pipeline.js';
import type { Logger } from '../shared/log.js';
import type { AuditLog } from './audit.js';
import type { ConfigState } from './config-state.js';
import type { GoldenGate } from './model-queue.js';

export class Recipes {
  private selections: RecipeSelectionStore | null = null;

  constructor(
    private readonly state: ConfigState,
    private readonly pipeline: () => Pipeline,
    private readonly gate: GoldenGate,
    private readonly audit: AuditLog,
    private readonly log: Logger,
  ) {}

  /**
   * Every recipe's model, each held to its golden samples (the recipe's model.goldenDir, else the
   * set beside its model file) before it may serve: a model that fails them refuses its recipes.
   */
  loadModels(config: AppConfig): Promise<RecipeModels> {
    const recipeOf = new Map(Object.keys(config.recipes).map((name) => {
      const own = recipeModelConfig(config, name);
      return [own.model.path, own] as const;
    }));
    return RecipeModels.load(config, (file) => this.gate.load(file, recipeOf.get(file) ?? config, { kind: 'daemon' }, `recipe model ${file}`), this.log);
  }

  /** The selections of the last run, where their camera and recipe still exist and serve. */
  restoreSelections(): void {
    this.selections = new RecipeSelectionStore(this.state.config.service.stateDir, this.log);
    for (const [camera, recipe] of Object.entries(this.selections.load())) {
      const problem = this.pipeline().selectRecipe(camera, recipe);
      if (problem) this.log.warn({ camera, recipe, problem }, 'recipe selected before the restart not restored; the configured recipe applies');
    }
  }

  active(): Record<string, RecipeName> {
    return Object.fromEntries(enabledCameraIds(this.state.config).map((id) => [id, this.pipeline().activeRecipe(id)]));
  }

  /** Switch one camera's recipe and keep the selection; returns why not, or null. */
  select(camera: string, recipe: RecipeName, by: 'recipe/set' | 'trigger', transaction: string | null, actor: AuditActor): string | null {
    const previous = this.pipeline().activeRecipe(camera);
    const problem = this.pipeline().selectRecipe(camera, recipe);
    if (problem !== null || previous === recipe) return problem;
    this.selections?.save(this.active());
    this.log.info({ camera, recipe, previous, by }, 'recipe selected');
    const revision = this.state.revision;
    this.audit.tryRecord({
      kind: 'recipe', outcome: 'applied', actor, transaction, revisionBefore: revision, revisionAfter: revision,
      changes: [{ key: `cameras.${camera}.recipe`, old: previous, new: recipe }], details: { by },
    }, this.log);
    return null;
  }

  /** A recipe/set request: all of it applies, or none (every target is checked first). */
  handleSet(request: RecipeSetRequest, actor: AuditActor): RecipeResponse {
    const config = this.state.config;
    const cameras = enabledCameraIds(config);
    const error = (message: string): RecipeResponse => ({ transaction: request.transaction, status: 'error', error: message, active: this.active() });
    if (request.camera !== undefined && !cameras.includes(request.camera)) {
      return error(`no enabled camera "${request.camera}" (cameras: ${cameras.join(', ') || 'none'})`);
    }
    if (!recipeExists(config, request.recipe)) {
      return error(`no recipe named "${request.recipe}" (recipes: ${Object.keys(config.recipes).join(', ') || 'none'})`);
    }
    const refusal = this.pipeline().recipeModels.refusal(request.recipe);
    if (refusal !== null) return error(`recipe ${request.recipe} refused: ${refusal}`);
    for (const camera of request.camera === undefined ? cameras : [request.camera]) {
      const problem = this.select(camera, request.recipe, 'recipe/set', request.transaction, actor);
      if (problem !== null) return error(problem);
    }
    return { transaction: request.transaction, status: 'ok', active: this.active() };
  }
}
