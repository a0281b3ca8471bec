// The CRAD model contract (../shared/design/model-contract.md) checked against a decoded ONNX
// model: graph inputs and outputs, the crad.* metadata, and every finding named at once.
import path from 'node:path';
import { describeShape, FLOAT32, graphValue, isDynamic, isFixed, typeName, UINT8, type DecodedModel } from './onnx-proto.js';
import type { Calibration, InputForm, ModelInfo } from './types.js';

/** The contract versions this daemon reads: 1 (float32 input), 2 (adds the uint8 input form). */
export const CONTRACT_FORMATS = ['1', '2'] as const;
export const INPUT_NAME = 'image';
export const MAP_OUTPUT = 'anomaly_map';
export const SCORE_OUTPUT = 'score';

/** What each input form is, as the graph and crad.input declare it. */
const INPUT_FORMS: Record<InputForm, {
  elemType: number; dtype: string; layout: 'NCHW' | 'NHWC'; color: 'RGB' | 'BGR'; range: [number, number];
  /** Format 1 files have no crad.input.layout key (NCHW is implied); the uint8 form must state its layout. */
  layoutOptional: boolean;
  /** The contract format that introduced it: an older crad.format cannot declare it. */
  since: string;
  /** The graph input's shape, for messages. */
  shape: string;
}> = {
  'float32-rgb-nchw': { elemType: FLOAT32, dtype: 'float32', layout: 'NCHW', color: 'RGB', range: [0, 1], layoutOptional: true, since: '1', shape: '[N, 3, H, W]' },
  'uint8-bgr-nhwc': { elemType: UINT8, dtype: 'uint8', layout: 'NHWC', color: 'BGR', range: [0, 255], layoutOptional: false, since: '2', shape: '[N, H, W, 3]' },
};

const formOfElemType = (elemType: number | null): InputForm | null =>
  (Object.keys(INPUT_FORMS) as InputForm[]).find((form) => INPUT_FORMS[form].elemType === elemType) ?? null;

/** The form crad.input declares (no dtype: format 1's float32); null when that cannot be told. */
function declaredForm(inputText: string | undefined): InputForm | null {
  if (inputText === undefined) return null;
  try {
    const v: unknown = JSON.parse(inputText);
    if (!isObject(v)) return null;
    const dtype = v.dtype ?? 'float32';
    return (Object.keys(INPUT_FORMS) as InputForm[]).find((form) => INPUT_FORMS[form].dtype === dtype) ?? null;
  } catch {
    return null; // reported with the other crad.input problems
  }
}

/** A model file that passed the contract check. */
export interface ModelFile {
  /** ModelInfo less what only a session knows (the execution provider). */
  info: Omit<ModelInfo, 'executionProvider'>;
  /** The file's bytes: sessions are created from these, so the hash describes what runs. */
  bytes: Uint8Array;
  /** Input size the graph expects (and the frames are resized to). */
  height: number;
  width: number;
  /** Non-fatal findings (an uncalibrated model, for one). */
  warnings: string[];
  metadata: Record<string, string>;
  opset: number | null;
}

function parseJson(key: string, text: string, problems: string[]): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    problems.push(`metadata ${key} is not valid JSON (${(err as Error).message}): ${JSON.stringify(text.slice(0, 80))}`);
    return undefined;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Validate crad.calibration's parsed JSON; pushes problems and returns null when unusable. */
export function parseCalibration(value: unknown, problems: string[]): Calibration | null {
  const key = 'crad.calibration';
  if (!isObject(value)) {
    problems.push(`metadata ${key} must be a JSON object with "image" and "pixel"`);
    return null;
  }
  const before = problems.length;
  const level = (name: 'image' | 'pixel') => {
    const part = value[name];
    if (!isObject(part)) {
      problems.push(`metadata ${key}.${name} is missing or not an object {threshold, min, max}`);
      return null;
    }
    const out: Record<string, number> = {};
    for (const field of ['threshold', 'min', 'max'] as const) {
      const v = part[field];
      if (typeof v !== 'number' || !Number.isFinite(v)) {
        problems.push(`metadata ${key}.${name}.${field} must be a finite number (got ${JSON.stringify(v)})`);
      } else {
        out[field] = v;
      }
    }
    if (out.min !== undefined && out.max !== undefined && !(out.max > out.min)) {
      problems.push(`metadata ${key}.${name}: max (${out.max}) must be greater than min (${out.min}), scores are normalised by max - min`);
    }
    return out as { threshold: number; min: number; max: number };
  };
  const image = level('image');
  const pixel = level('pixel');
  if (value.source !== undefined && typeof value.source !== 'string') problems.push(`metadata ${key}.source must be a string`);
  if (value.images !== undefined && (!Number.isInteger(value.images) || (value.images as number) < 0)) {
    problems.push(`metadata ${key}.images must be a non-negative integer`);
  }
  if (value.warning !== undefined && typeof value.warning !== 'string') problems.push(`metadata ${key}.warning must be a string`);
  const synthetic = value.synthetic;
  const syntheticFields = ['anomalies', 'missed_at_threshold', 'miss_rate_at_threshold'] as const;
  if (synthetic !== undefined && (!isObject(synthetic) || syntheticFields.some((f) => typeof synthetic[f] !== 'number' || !Number.isFinite(synthetic[f])))) {
    problems.push(`metadata ${key}.synthetic must be an object of finite numbers {${syntheticFields.join(', ')}}`);
  }
  if (problems.length > before || !image || !pixel) return null;
  const calibration: Calibration = { image, pixel };
  if (typeof value.source === 'string') calibration.source = value.source;
  if (typeof value.images === 'number') calibration.images = value.images;
  if (typeof value.warning === 'string') calibration.warning = value.warning;
  if (isObject(synthetic)) {
    calibration.synthetic = {
      anomalies: synthetic.anomalies as number, missedAtThreshold: synthetic.missed_at_threshold as number, missRateAtThreshold: synthetic.miss_rate_at_threshold as number,
    };
  }
  return calibration;
}

/**
 * Check a decoded model against the contract. Returns the findings; throws nothing, so that a
 * caller sees every problem of a file at once.
 */
export function checkContract(file: string, decoded: DecodedModel, hash: string): { problems: string[]; result: ModelFile | null; warnings: string[] } {
  const problems: string[] = [];
  const warnings: string[] = [];
  const metadata: Record<string, string> = {};
  for (const entry of decoded.metadata_props ?? []) {
    if (entry.key) metadata[entry.key] = entry.value ?? '';
  }

  // Graph: initializers may be listed as inputs in older IR versions; they are not inputs to feed.
  const graph = decoded.graph ?? {};
  const initializers = new Set((graph.initializer ?? []).map((t) => t.name));
  const inputs = (graph.input ?? []).filter((v) => !initializers.has(v.name)).map(graphValue);
  const outputs = (graph.output ?? []).map(graphValue);

  let height = 0;
  let width = 0;
  const declared = declaredForm(metadata['crad.input']);
  const image = inputs.find((v) => v.name === INPUT_NAME);
  if (!image) {
    problems.push(`the graph has no input named "${INPUT_NAME}" (inputs: ${inputs.map((v) => `"${v.name}"`).join(', ') || 'none'})`);
  } else {
    const graphForm = formOfElemType(image.elemType);
    if (!graphForm) {
      problems.push(`input "${INPUT_NAME}" must be float32 (format 1) or uint8 (format 2), not ${typeName(image.elemType)}`);
    } else if (declared && declared !== graphForm) {
      problems.push(`metadata crad.input declares the ${declared} input form but the graph's input "${INPUT_NAME}" is ${typeName(image.elemType)} (the ${graphForm} form)`);
    }
    // The shape is checked against the form the graph has (else the one declared).
    const form = INPUT_FORMS[graphForm ?? declared ?? 'float32-rgb-nchw'];
    const [channelAxis, heightAxis, widthAxis] = form.layout === 'NCHW' ? [1, 2, 3] : [3, 1, 2];
    const s = image.shape;
    if (!s || s.length !== 4) {
      problems.push(`input "${INPUT_NAME}" must have shape ${form.shape} (${form.dtype} ${form.layout}), not ${describeShape(s)}`);
    } else {
      if (!isDynamic(s[0])) problems.push(`input "${INPUT_NAME}" must have a dynamic batch axis, not a fixed ${String(s[0])} (shape ${describeShape(s)})`);
      if (s[channelAxis] !== 3) {
        problems.push(`input "${INPUT_NAME}" must have 3 channels (${form.color}) in ${form.layout} order ${form.shape}, shape is ${describeShape(s)}`);
      }
      if (!isFixed(s[heightAxis]) || !isFixed(s[widthAxis])) {
        problems.push(`input "${INPUT_NAME}" must have a fixed height and width, shape is ${describeShape(s)}`);
      } else {
        height = s[heightAxis];
        width = s[widthAxis];
      }
    }
  }
  if (inputs.length > 1) {
    problems.push(`the graph must have exactly one input ("${INPUT_NAME}"), it has ${inputs.length}: ${inputs.map((v) => `"${v.name}"`).join(', ')}`);
  }

  const map = outputs.find((v) => v.name === MAP_OUTPUT);
  if (!map) {
    problems.push(`the graph has no output named "${MAP_OUTPUT}" (outputs: ${outputs.map((v) => `"${v.name}"`).join(', ') || 'none'})`);
  } else {
    const s = map.shape;
    if (map.elemType !== FLOAT32) problems.push(`output "${MAP_OUTPUT}" must be float32, not ${typeName(map.elemType)}`);
    // Symbolic H/W (an exporter's computed axis names) cannot be checked here; the warm-up run checks them.
    if (s !== null) {
      if (s.length !== 4) {
        problems.push(`output "${MAP_OUTPUT}" must have shape [N, 1, H, W], not ${describeShape(s)}`);
      } else {
        if (isFixed(s[0])) problems.push(`output "${MAP_OUTPUT}" must have a dynamic batch axis, shape is ${describeShape(s)}`);
        if (s[1] !== 1 && typeof s[1] === 'number') problems.push(`output "${MAP_OUTPUT}" must have 1 channel, shape is ${describeShape(s)}`);
        if (height && width && ((isFixed(s[2]) && s[2] !== height) || (isFixed(s[3]) && s[3] !== width))) {
          problems.push(`output "${MAP_OUTPUT}" must be the input's size ${height}x${width}, shape is ${describeShape(s)}`);
        }
      }
    }
  }
  const score = outputs.find((v) => v.name === SCORE_OUTPUT);
  if (!score) {
    problems.push(`the graph has no output named "${SCORE_OUTPUT}" (outputs: ${outputs.map((v) => `"${v.name}"`).join(', ') || 'none'})`);
  } else {
    if (score.elemType !== FLOAT32) problems.push(`output "${SCORE_OUTPUT}" must be float32, not ${typeName(score.elemType)}`);
    if (score.shape !== null && (score.shape.length !== 1 || isFixed(score.shape[0]))) {
      problems.push(`output "${SCORE_OUTPUT}" must have shape [N] with a dynamic N, not ${describeShape(score.shape)}`);
    }
  }

  // Metadata.
  const format = metadata['crad.format'];
  if (format === undefined) {
    const keys = Object.keys(metadata);
    problems.push(`metadata crad.format is missing: not a CRAD model (metadata keys: ${keys.length ? keys.join(', ') : 'none'})`);
    // Without the format key the other crad.* keys are noise to report; the file is not ours.
    return { problems, result: null, warnings };
  } else if (!(CONTRACT_FORMATS as readonly string[]).includes(format)) {
    problems.push(`metadata crad.format is "${format}", this daemon reads formats ${CONTRACT_FORMATS.map((f) => `"${f}"`).join(' and ')}`);
  } else if (declared && Number(format) < Number(INPUT_FORMS[declared].since)) {
    problems.push(`metadata crad.format is "${format}", but the ${declared} input form needs format "${INPUT_FORMS[declared].since}" or later`);
  }

  const requiredText = (key: string): string => {
    const v = metadata[key];
    if (v === undefined || v.trim() === '') {
      problems.push(`metadata ${key} is ${v === undefined ? 'missing' : 'empty'}`);
      return '';
    }
    return v;
  };
  const variant = requiredText('crad.variant');
  const backbone = requiredText('crad.backbone');

  let input: ModelInfo['input'] | null = null;
  const inputText = metadata['crad.input'];
  if (inputText === undefined) {
    problems.push('metadata crad.input is missing');
  } else {
    const v = parseJson('crad.input', inputText, problems);
    if (v !== undefined) {
      if (!isObject(v)) {
        problems.push('metadata crad.input must be a JSON object {height, width, color, range, resize}');
      } else {
        const before = problems.length;
        for (const key of ['height', 'width'] as const) {
          if (!Number.isInteger(v[key]) || (v[key] as number) <= 0) problems.push(`metadata crad.input.${key} must be a positive integer (got ${JSON.stringify(v[key])})`);
        }
        if (height && width && Number.isInteger(v.height) && Number.isInteger(v.width) && (v.height !== height || v.width !== width)) {
          problems.push(`metadata crad.input says ${String(v.height)}x${String(v.width)} but the graph's input "${INPUT_NAME}" is ${height}x${width}`);
        }
        if (!declared) {
          problems.push(`metadata crad.input.dtype must be "float32" (or absent) or "uint8" (got ${JSON.stringify(v.dtype)})`);
        } else {
          const form = INPUT_FORMS[declared];
          const must = (key: string, expected: unknown, ok: boolean) => {
            if (!ok) problems.push(`metadata crad.input.${key} must be ${JSON.stringify(expected)} for the ${declared} input form (got ${JSON.stringify(v[key])})`);
          };
          must('layout', form.layout, v.layout === form.layout || (v.layout === undefined && form.layoutOptional));
          must('color', form.color, v.color === form.color);
          must('range', form.range, Array.isArray(v.range) && v.range.length === 2 && v.range[0] === form.range[0] && v.range[1] === form.range[1]);
        }
        if (typeof v.resize !== 'string' || v.resize === '') problems.push(`metadata crad.input.resize must be a non-empty string (got ${JSON.stringify(v.resize)})`);
        if (problems.length === before && declared) {
          const form = INPUT_FORMS[declared];
          input = { form: declared, height: v.height as number, width: v.width as number, color: form.color, range: form.range, resize: v.resize as string };
        }
      }
    }
  }

  let classes: string[] = [];
  const classesText = metadata['crad.classes'];
  if (classesText === undefined) {
    problems.push('metadata crad.classes is missing');
  } else {
    const v = parseJson('crad.classes', classesText, problems);
    if (v !== undefined) {
      if (!Array.isArray(v) || v.some((c) => typeof c !== 'string' || c === '')) {
        problems.push(`metadata crad.classes must be a JSON list of class names (got ${JSON.stringify(v).slice(0, 80)})`);
      } else {
        // The trainer writes [] when its checkpoint did not record the classes: odd, not unusable.
        if (v.length === 0) warnings.push(`model ${file} lists no trained classes (crad.classes is [])`);
        classes = v as string[];
      }
    }
  }

  let calibration: Calibration | null = null;
  const calibrationText = metadata['crad.calibration'];
  if (calibrationText === undefined) {
    warnings.push(`model ${file} is uncalibrated (no crad.calibration): raw scores only, no normalised score or verdict`);
  } else {
    const v = parseJson('crad.calibration', calibrationText, problems);
    if (v !== undefined) calibration = parseCalibration(v, problems);
    if (calibration?.warning) warnings.push(`model ${file}: the trainer's calibration warns: ${calibration.warning}`);
  }

  let training: Record<string, unknown> | null = null;
  const trainingText = metadata['crad.training'];
  if (trainingText !== undefined) {
    const v = parseJson('crad.training', trainingText, problems);
    if (v !== undefined) {
      if (isObject(v)) training = v;
      else problems.push('metadata crad.training must be a JSON object');
    }
  }

  if (problems.length > 0 || !input) return { problems, result: null, warnings };

  const opset = (decoded.opset_import ?? []).find((o) => !o.domain || o.domain === 'ai.onnx')?.version ?? null;
  const modelVersion = decoded.model_version ?? 0;
  return {
    problems,
    warnings,
    result: {
      info: {
        path: file,
        hash,
        name: path.basename(file).replace(/\.onnx$/i, ''),
        variant,
        backbone,
        // The ModelProto's model_version when the exporter set one, else the content hash prefix:
        // either way two different files never show the same version.
        version: modelVersion > 0 ? String(modelVersion) : hash.slice(0, 12),
        input,
        classes,
        calibration,
        training,
      },
      bytes: new Uint8Array(0),
      height,
      width,
      warnings,
      metadata,
      opset,
    },
  };
}
