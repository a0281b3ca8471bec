// The models a pipeline runs on: the base model and the recipes' models, and those handed over to
// replace them. A replacement is swapped in between batches (a batch never sees two models), and
// an old model is released once nothing runs on it any more.
import type { Frame } from '../capture/frame.js';
import type { RecipeName } from '../config/recipes.js';
import type { Logger } from '../shared/log.js';
import type { CradModel } from './model.js';
import type { RecipeModels } from './recipes.js';
import type { ModelInfo } from './types.js';

export interface ModelSlotHooks {
  /** A new base model serves from the next batch on. */
  swapped(info: ModelInfo): void;
  /** Readiness may have changed: new recipes serve, or a swap stopped (or started) waiting. */
  changed(): void;
}

export class ModelSlot {
  private next: CradModel | null = null;
  private nextRecipes: RecipeModels | null = null;
  private closed = false;
  /** When the running swap began waiting for the old model's batches, or null. */
  private blockedSince: number | null = null;

  constructor(private model: CradModel, private recipes: RecipeModels, private readonly hooks: ModelSlotHooks, private readonly log: Logger) {}

  /** The model a batch of `recipe`'s frames runs on. */
  modelFor(recipe: RecipeName): CradModel {
    return this.recipes.model(recipe) ?? this.model;
  }

  /** Frames grouped by the model their recipe runs on now, in the order the models first appear. */
  byModel(frames: Frame[]): Map<CradModel, Frame[]> {
    const groups = new Map<CradModel, Frame[]>();
    for (const frame of frames) {
      const model = this.modelFor(frame.recipe ?? null);
      const group = groups.get(model);
      if (group) group.push(frame);
      else groups.set(model, [frame]);
    }
    return groups;
  }

  /** Why a recipe cannot serve now, or null. */
  refusal(recipe: RecipeName): string | null {
    return this.recipes.refusal(recipe);
  }

  get current(): CradModel {
    return this.model;
  }

  /** The model the next batch runs on: one handed over and not yet swapped in, else the current one. */
  get latest(): CradModel {
    return this.next ?? this.model;
  }

  /** The recipes' models that serve from the next batch on. */
  get latestRecipes(): RecipeModels {
    return this.nextRecipes ?? this.recipes;
  }

  /** How long the running swap has waited for the old model's batches (0: none waits). */
  blockedMs(): number {
    return this.blockedSince === null ? 0 : performance.now() - this.blockedSince;
  }

  /** Hand over a loaded, warmed-up model; `now` swaps it in at once (nothing runs yet). */
  replaceModel(model: CradModel, now: boolean): void {
    if (this.closed) {
      void model.release();
      return;
    }
    const stale = this.next;
    this.next = model;
    if (stale) void stale.release();
    if (now) void this.swap();
  }

  /** Hand over the models of a new set of recipes; `now` as for replaceModel. */
  replaceRecipes(recipes: RecipeModels, now: boolean): void {
    if (this.closed) {
      void recipes.release();
      return;
    }
    const stale = this.nextRecipes;
    this.nextRecipes = recipes;
    if (stale) void stale.release();
    if (now) void this.swap();
  }

  /** Between batches: swap in what was handed over, and release what it replaces. */
  async swap(): Promise<void> {
    const recipes = this.nextRecipes;
    if (recipes) {
      this.nextRecipes = null;
      const old = this.recipes;
      this.recipes = recipes;
      this.hooks.changed();
      await old.release();
    }
    const next = this.next;
    if (!next) return;
    this.next = null;
    const old = this.model;
    this.model = next;
    this.hooks.swapped(next.info);
    this.log.info({ model: next.info.path, hash: next.info.hash }, 'model swapped');
    // Waits for batches still running on the old model (with more than one session); a wait
    // longer than a trigger's deadline makes a camera not ready.
    this.blockedSince = performance.now();
    try {
      await old.release();
    } finally {
      this.blockedSince = null;
      this.hooks.changed();
    }
  }

  /** Release every model, handed over or serving; anything handed over later is released at once. */
  async close(): Promise<void> {
    this.closed = true;
    const pending = this.next;
    this.next = null;
    await pending?.release();
    await this.model.release();
    await this.nextRecipes?.release();
    await this.recipes.release();
  }
}
