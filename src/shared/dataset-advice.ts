// How many good images a station needs before it can teach itself a model, said the same way on
// the console page, in TeachStatus and by `crad teach` (training/crad/teach.py MIN_IMAGES).

/** Below this `crad teach` refuses: part of the set calibrates (at least 10 images), the rest trains. */
export const MINIMUM_IMAGES = 20;
/** Enough for a threshold with a false-reject bound and a model that has seen the part's variation. */
export const RECOMMENDED_IMAGES = 100;

export interface DatasetAdvice {
  count: number;
  minimum: number;
  recommended: number;
  why: string;
}

export function datasetAdvice(count: number): DatasetAdvice {
  const why = count < MINIMUM_IMAGES
    ? `${count} of at least ${MINIMUM_IMAGES} good images: a fifth of them (at least 10) set the threshold and the rest teach the model, so fewer cannot give a threshold worth trusting. Record ${MINIMUM_IMAGES - count} more.`
    : count < RECOMMENDED_IMAGES
      ? `${count} good images are enough to start; about ${RECOMMENDED_IMAGES} give a steadier threshold (fewer good parts rejected) and show the model more of the part's normal variation.`
      : `${count} good images: enough. Record more only to cover variation the line has not shown yet (lighting, batches, positions).`;
  return { count, minimum: MINIMUM_IMAGES, recommended: RECOMMENDED_IMAGES, why };
}
