// Recipes: named product settings over the base configuration. The schema says which keys a
// recipe may override (leaves marked `recipe`) and validates each override by that leaf's format;
// here a recipe is checked against the rest of the config and applied to it.
import path from 'node:path';
import { RECIPE_CAMERA_FIELDS, RECIPE_KEYS } from './policy.js';
import { valueAt, type AppConfig, type CameraConfig, type RecipeOverrides, type Roi } from './schema.js';

/** The base configuration, as results and statuses name it. */
export const NO_RECIPE = null;
export type RecipeName = string | null;

/** Why the config's recipes do not fit its cameras, or null when they do. */
export function recipeReferenceProblem(config: AppConfig): string | null {
  const ids = new Set(config.cameras.map((c) => c.id));
  for (const [index, camera] of config.cameras.entries()) {
    if (camera.recipe !== '' && !Object.hasOwn(config.recipes, camera.recipe)) {
      return `cameras[${index}].recipe: no recipe named "${camera.recipe}" (recipes: ${Object.keys(config.recipes).join(', ') || 'none'})`;
    }
  }
  for (const [name, recipe] of Object.entries(config.recipes)) {
    for (const id of Object.keys(recipe.cameras ?? {})) {
      if (!ids.has(id)) return `recipes.${name}.cameras.${id}: no camera with this id`;
    }
  }
  return null;
}

/** Recipe model paths resolved against the config file's directory, like model.path. */
export function resolveRecipePaths(recipes: Record<string, RecipeOverrides>, baseDir: string): Record<string, RecipeOverrides> {
  return Object.fromEntries(Object.entries(recipes).map(([name, recipe]) => {
    const model = recipe.model as { path?: string } | undefined;
    if (!model?.path || path.isAbsolute(model.path)) return [name, recipe];
    return [name, { ...recipe, model: { ...model, path: path.resolve(baseDir, model.path) } }];
  }));
}

/** The recipe names a camera may select: every recipe, and null for the base configuration. */
export function recipeExists(config: AppConfig, name: RecipeName): boolean {
  return name === NO_RECIPE || Object.hasOwn(config.recipes, name);
}

/** The number a PLC knows a recipe by (recipes.<name>.number), when the config gives one. */
export function recipeNumber(config: AppConfig, name: RecipeName): number | undefined {
  return name === NO_RECIPE ? undefined : config.recipes[name]?.number;
}

/** A camera's configured recipe (its `recipe` field; '' is the base configuration). */
export function configuredRecipe(camera: CameraConfig): RecipeName {
  return camera.recipe === '' ? NO_RECIPE : camera.recipe;
}

/**
 * The configuration a recipe's model is loaded and checked with: withRecipe, and without a golden
 * set of its own (the base's model.goldenDir inherited) the set beside the recipe's model file.
 */
export function recipeModelConfig(config: AppConfig, name: RecipeName): AppConfig {
  const own = withRecipe(config, name);
  if (name !== NO_RECIPE && own !== config && own.model.goldenDir === config.model.goldenDir) own.model.goldenDir = '';
  return own;
}

/** The recipes with `name`'s model file replaced by `file` (the recipe gets a model of its own if it had none). */
export function recipesWithModel(recipes: Record<string, RecipeOverrides>, name: string, file: string): Record<string, RecipeOverrides> {
  const recipe = recipes[name]!;
  return { ...recipes, [name]: { ...recipe, model: { ...(recipe.model as Record<string, unknown> | undefined), path: file } } };
}

/** The configuration a recipe inspects with: the base with the recipe's global overrides. */
export function withRecipe(config: AppConfig, name: RecipeName): AppConfig {
  const recipe = name === NO_RECIPE ? undefined : config.recipes[name];
  if (!recipe) return config;
  const out = structuredClone(config);
  for (const key of RECIPE_KEYS) {
    const value = valueAt(recipe, key);
    if (value !== undefined) setAt(out as unknown as Record<string, unknown>, key.split('.'), value);
  }
  return out;
}

/** A camera's fields under a recipe (the recipe's per-camera overrides over the camera's own). */
export function cameraWithRecipe(config: AppConfig, camera: CameraConfig, name: RecipeName): CameraConfig {
  const overrides = name === NO_RECIPE ? undefined : config.recipes[name]?.cameras?.[camera.id];
  if (!overrides) return camera;
  const out = { ...camera };
  for (const field of RECIPE_CAMERA_FIELDS) {
    if (Object.hasOwn(overrides, field)) (out as Record<string, unknown>)[field] = overrides[field];
  }
  return out;
}

/** The ROI a camera's frames are inspected with under a recipe. */
export function recipeRoi(config: AppConfig, camera: CameraConfig, name: RecipeName): Roi | null {
  return cameraWithRecipe(config, camera, name).roi;
}

function setAt(target: Record<string, unknown>, segments: string[], value: unknown): void {
  let node = target;
  for (const segment of segments.slice(0, -1)) node = node[segment] as Record<string, unknown>;
  node[segments[segments.length - 1]!] = structuredClone(value);
}
