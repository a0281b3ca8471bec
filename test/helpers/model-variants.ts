// Model files for hot-swap tests, made from the demo model without Python: the same graph with one
// extra metadata_props entry (a different file, so a different hash), and a corrupt one.
import fs from 'node:fs';
import protobuf from 'protobufjs';

/** ModelProto.metadata_props (onnx.proto field 14), StringStringEntryProto key = 1, value = 2. */
const METADATA_PROPS_FIELD = 14;

/**
 * Copy `source` to `dest` with a metadata entry `key`: `value` appended. A repeated protobuf field
 * may appear again anywhere in a message, so appending the encoded entry to the file gives a valid
 * ModelProto that onnxruntime runs exactly like the original, with other bytes (another sha256).
 */
export function writeModelVariant(source: string, dest: string, key: string, value: string): void {
  const entry = protobuf.Writer.create()
    .uint32((METADATA_PROPS_FIELD << 3) | 2)
    .fork()
    .uint32((1 << 3) | 2).string(key)
    .uint32((2 << 3) | 2).string(value)
    .ldelim()
    .finish();
  fs.writeFileSync(dest, Buffer.concat([fs.readFileSync(source), entry]));
}

/** A file named .onnx that is no model: the first KiB of the real one, then garbage. */
export function writeCorruptModel(source: string, dest: string): void {
  const head = fs.readFileSync(source).subarray(0, 1024);
  fs.writeFileSync(dest, Buffer.concat([head, Buffer.alloc(4096, 0xa5)]));
}

/**
 * A copy of `source` whose calibration puts the image threshold at `threshold` (raw units): the
 * metadata entry appended last wins, so the same graph gives other verdicts (a very high threshold
 * calls every image OK, so NG golden samples fail).
 */
export async function writeRecalibratedModel(source: string, dest: string, threshold: number): Promise<void> {
  const { readModelFile } = await import('../../src/inference/model-file.js');
  const calibration = (await readModelFile(source)).info.calibration;
  if (!calibration) throw new Error(`${source} is uncalibrated`);
  writeModelVariant(source, dest, 'crad.calibration', JSON.stringify({ ...calibration, image: { ...calibration.image, threshold } }));
}
