// The model file and its contract check (../shared/design/model-contract.md): read the ONNX file
// once, hash it, decode the parts of the ModelProto the contract speaks about, and say precisely
// what is wrong when the file is not a CRAD model this daemon can run.
//
// The ONNX decoding is in onnx-proto.ts, the contract's rules in model-contract.ts.
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import { checkContract, CONTRACT_FORMATS, type ModelFile } from './model-contract.js';
import { decodeModelSubset, type DecodedModel } from './onnx-proto.js';

/** The file is missing, unreadable or not an ONNX model. */
export class ModelFileError extends Error {
  override name = 'ModelFileError';
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(message);
  }
}

/** The file is ONNX but breaks the CRAD model contract; `problems` lists every finding. */
export class ModelContractError extends ModelFileError {
  override name = 'ModelContractError';
  constructor(
    file: string,
    readonly problems: string[],
  ) {
    super(file, `model ${file} breaks the CRAD model contract (formats ${CONTRACT_FORMATS.join(' and ')}):\n  - ${problems.join('\n  - ')}`);
  }
}

/** Decode the ModelProto subset; throws ModelFileError when the bytes are not a protobuf ModelProto. */
export function decodeModelProto(file: string, bytes: Uint8Array): DecodedModel {
  let decoded: DecodedModel;
  try {
    decoded = decodeModelSubset(bytes);
  } catch (err) {
    throw new ModelFileError(file, `model ${file} is not a readable ONNX file (truncated or corrupt?): ${(err as Error).message}`);
  }
  if (!decoded.graph || !decoded.ir_version) {
    throw new ModelFileError(file, `model ${file} is not an ONNX model (or is truncated): it has no ${decoded.ir_version ? 'graph' : 'IR version'}`);
  }
  return decoded;
}

/**
 * Read a model file, hash it and check the contract. Throws ModelFileError (missing, unreadable,
 * not ONNX) or ModelContractError (ONNX, but not a CRAD model this daemon can run).
 */
export async function readModelFile(file: string): Promise<ModelFile> {
  let bytes: Buffer;
  try {
    bytes = await fs.readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'does not exist' : code === 'EISDIR' ? 'is a directory' : code === 'EACCES' ? 'is not readable (permission denied)' : (err as Error).message;
    throw new ModelFileError(file, `model file ${file} ${why}`);
  }
  if (bytes.length === 0) throw new ModelFileError(file, `model file ${file} is empty`);
  const hash = createHash('sha256').update(bytes).digest('hex');
  const decoded = decodeModelProto(file, bytes);
  const { problems, result } = checkContract(file, decoded, hash);
  if (!result) throw new ModelContractError(file, problems);
  result.bytes = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return result;
}
