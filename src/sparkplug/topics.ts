// The Sparkplug B topic namespace: spBv1.0/<group>/<type>/<node>[/<device>], and the host's STATE.
export const NAMESPACE = 'spBv1.0';

export type NodeMessageType = 'NBIRTH' | 'NDATA' | 'NDEATH' | 'NCMD';
export type DeviceMessageType = 'DBIRTH' | 'DDATA' | 'DDEATH' | 'DCMD';

export class SparkplugTopics {
  constructor(readonly groupId: string, readonly edgeNodeId: string) {}

  node(type: NodeMessageType): string {
    return `${NAMESPACE}/${this.groupId}/${type}/${this.edgeNodeId}`;
  }

  device(type: DeviceMessageType, deviceId: string): string {
    return `${this.node(type as unknown as NodeMessageType)}/${deviceId}`;
  }

  /** DCMD for every device of this node (one subscription). */
  get deviceCommands(): string {
    return this.device('DCMD', '+');
  }

  /** The device a DCMD topic names, or null when the topic is not one of this node's DCMDs. */
  commandDevice(topic: string): string | null {
    const prefix = `${this.node('DCMD' as unknown as NodeMessageType)}/`;
    return topic.startsWith(prefix) && topic.length > prefix.length ? topic.slice(prefix.length) : null;
  }

  static hostState(hostId: string): string {
    return `${NAMESPACE}/STATE/${hostId}`;
  }
}
