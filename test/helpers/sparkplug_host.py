#!/usr/bin/python3
"""A Sparkplug B host application for the tests, none of it the daemon's code: Debian's protoc
generates the payload classes from the official sparkplug_b.proto at start, Debian's mosquitto_sub
and mosquitto_pub carry the MQTT. It decodes every message under spBv1.0/<group>/# and checks the
edge-node rules it can see; what it sees (and every rule broken) goes to stdout as JSON lines.

stdin, one JSON object a line:
  {"cmd": "state", "online": bool, "timestamp": ms?}      STATE, retained, QoS 1
  {"cmd": "ncmd", "metrics": [...]}                        NCMD; metrics as protobuf field dicts
  {"cmd": "dcmd", "device": id, "metrics": [...]}          DCMD
  {"cmd": "raw", "topic": t, "hex": bytes}                  anything, QoS 0
With --announce, the host publishes STATE online each time its subscription is (re)made, as a
primary host does after it connects.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

p = argparse.ArgumentParser()
p.add_argument('--port', type=int, required=True)
p.add_argument('--group', required=True)
p.add_argument('--host-id', required=True)
p.add_argument('--proto', required=True)
p.add_argument('--announce', action='store_true')
p.add_argument('--work', required=True, help='an empty directory for the generated classes (the caller removes it)')
args = p.parse_args()

work = args.work
subprocess.run(['/usr/bin/protoc', f'--proto_path={os.path.dirname(args.proto)}', f'--python_out={work}', os.path.basename(args.proto)], check=True)
sys.path.insert(0, work)
import sparkplug_b_pb2 as spb  # noqa: E402

NODE_TYPES = {'NBIRTH', 'NDATA', 'NDEATH', 'NCMD'}
DEVICE_TYPES = {'DBIRTH', 'DDATA', 'DDEATH', 'DCMD'}
DT = spb.DataType
out_lock = threading.Lock()


def emit(obj):
    with out_lock:
        sys.stdout.write(json.dumps(obj) + '\n')
        sys.stdout.flush()


def violation(rule, detail, topic=None):
    emit({'event': 'violation', 'rule': rule, 'detail': detail, 'topic': topic})


def mqtt_args():
    return ['-h', '127.0.0.1', '-p', str(args.port)]


def publish(topic, payload, qos=0, retain=False):
    with tempfile.NamedTemporaryFile(dir=work, delete=False) as f:
        f.write(payload)
    cmd = ['mosquitto_pub', *mqtt_args(), '-t', topic, '-f', f.name, '-q', str(qos)] + (['-r'] if retain else [])
    subprocess.run(cmd, check=True)
    os.unlink(f.name)


def send_state(online, timestamp=None):
    ts = int(time.time() * 1000) if timestamp is None else timestamp
    publish(f'spBv1.0/STATE/{args.host_id}', json.dumps({'online': online, 'timestamp': ts}).encode(), qos=1, retain=True)
    emit({'event': 'state-sent', 'online': online, 'timestamp': ts})


def metric_value(m):
    which = m.WhichOneof('value')
    return None if which is None else getattr(m, which)


class Node:
    """What the host knows of one edge node (the rules are per node and per session)."""

    def __init__(self):
        self.born = False
        self.bdseq = None
        self.last_seq = None
        self.aliases = {}          # alias -> (device or None, name): aliases of the current birth set
        self.names = {}            # (device, name) -> alias, over the whole run: aliases are stable
        self.devices = set()       # born devices


nodes = {}


def check_metric_common(topic, m, kind):
    if not m.HasField('timestamp') and kind in ('NBIRTH', 'DBIRTH', 'NDATA', 'DDATA'):
        violation('payloads-name-birth-data-requirement', 'metric without timestamp', topic)


def handle(topic, qos, retain, payload):
    parts = topic.split('/')
    if len(parts) < 4 or parts[0] != 'spBv1.0' or parts[1] != args.group:
        return
    kind, node_id = parts[2], parts[3]
    device = parts[4] if len(parts) > 4 else None
    if kind in NODE_TYPES and device is not None or kind in DEVICE_TYPES and (device is None or len(parts) != 5):
        violation('topic-structure', 'device level wrong for ' + kind, topic)
    if kind in ('NCMD', 'DCMD'):
        return  # ours (or the test's garbage)
    node = nodes.setdefault(node_id, Node())
    msg = spb.Payload()
    try:
        msg.ParseFromString(payload)
    except Exception as e:  # noqa: BLE001
        violation('message-flow-edge-node-birth-publish-nbirth-payload', f'undecodable payload: {e}', topic)
        return
    metrics = []
    for m in msg.metrics:
        metrics.append({
            'name': m.name if m.HasField('name') else None,
            'alias': m.alias if m.HasField('alias') else None,
            'datatype': m.datatype if m.HasField('datatype') else None,
            'value': metric_value(m),
            'is_null': m.is_null,
            'is_historical': m.is_historical,
            'timestamp': m.timestamp if m.HasField('timestamp') else None,
        })
    record = {'event': 'message', 'type': kind, 'topic': topic, 'device': device, 'qos': qos, 'retain': retain,
              'seq': msg.seq if msg.HasField('seq') else None,
              'timestamp': msg.timestamp if msg.HasField('timestamp') else None, 'metrics': metrics}

    if retain:
        violation('payloads-nbirth-retain', f'{kind} retained', topic)
    if kind == 'NDEATH':
        if qos != 1:
            violation('payloads-ndeath-will-message-qos', f'NDEATH at QoS {qos}', topic)
        if msg.HasField('seq'):
            violation('payloads-ndeath-seq', 'NDEATH with seq', topic)
        bd = [m for m in msg.metrics if m.name == 'bdSeq']
        if len(bd) != 1 or bd[0].datatype != DT.Int64:
            violation('topics-ndeath-payload', 'NDEATH without one Int64 bdSeq', topic)
        else:
            record['bdSeq'] = bd[0].long_value
            record['matchesBirth'] = node.born and bd[0].long_value == node.bdseq
            # A host marks the node offline only for the NDEATH of the session it saw born.
            if record['matchesBirth']:
                node.born = False
                node.devices.clear()
        emit(record)
        return

    if qos != 0:
        violation('topics-nbirth-mqtt', f'{kind} at QoS {qos}', topic)
    if not msg.HasField('timestamp'):
        violation('payloads-nbirth-timestamp', f'{kind} without timestamp', topic)
    elif abs(msg.timestamp - time.time() * 1000) > 60000:
        # Epoch ms UTC, like this host's clock (the node publishes it at send time; not NDEATH,
        # whose Will payload is made at CONNECT).
        violation('payloads-timestamp-in-UTC', f'{kind} timestamp {msg.timestamp} is not the time of publishing in ms since the epoch (UTC)', topic)
    if not msg.HasField('seq') or not 0 <= msg.seq <= 255:
        violation('payloads-sequence-num-always-included', f'{kind} without a seq in 0..255', topic)
    for m in msg.metrics:
        check_metric_common(topic, m, kind)

    if kind == 'NBIRTH':
        if msg.seq != 0:
            violation('topics-nbirth-seq-num', f'NBIRTH seq {msg.seq}', topic)
        bd = [m for m in msg.metrics if m.name == 'bdSeq']
        rebirth = [m for m in msg.metrics if m.name == 'Node Control/Rebirth']
        if len(bd) != 1 or bd[0].datatype != DT.Int64:
            violation('topics-nbirth-bdseq-included', 'no Int64 bdSeq', topic)
        if len(rebirth) != 1 or rebirth[0].datatype != DT.Boolean or rebirth[0].boolean_value is not False or rebirth[0].HasField('alias'):
            violation('topics-nbirth-rebirth-metric', 'Node Control/Rebirth missing, not Boolean false, or aliased', topic)
        node.born = True
        node.bdseq = bd[0].long_value if bd else None
        record['bdSeq'] = node.bdseq
        node.aliases = {}
        node.devices = set()
        register_birth(node, None, msg, topic)
    elif not node.born:
        violation('payloads-ndata-order', f'{kind} before NBIRTH', topic)
    else:
        expected = (node.last_seq + 1) % 256
        if msg.seq != expected:
            violation('payloads-sequence-num-incrementing', f'{kind} seq {msg.seq}, expected {expected}', topic)
    node.last_seq = msg.seq

    if kind == 'DBIRTH':
        node.devices.add(device)
        register_birth(node, device, msg, topic)
    elif kind in ('NDATA', 'DDATA'):
        if kind == 'DDATA' and device not in node.devices:
            violation('payloads-ddata-order', f'DDATA for {device} not born', topic)
        for m in msg.metrics:
            if m.HasField('name') or not m.HasField('alias'):
                violation('payloads-alias-data-cmd-requirement', 'DATA metric with a name or without an alias', topic)
            elif node.aliases.get(m.alias, (None, None))[0] != device:
                violation('payloads-alias-data-cmd-requirement', f'alias {m.alias} not born for {device}', topic)
            if m.HasField('datatype'):
                violation('payloads-metric-datatype-not-req', 'datatype in DATA', topic)
        for mr in metrics:
            known = node.aliases.get(mr['alias'])
            mr['name'] = known[1] if known else None
    elif kind == 'DDEATH':
        if device not in node.devices:
            violation('operational-behavior-device-ddeath', f'DDEATH for {device} not born', topic)
        node.devices.discard(device)
    emit(record)


def register_birth(node, device, msg, topic):
    for m in msg.metrics:
        if not m.HasField('name') or not m.HasField('datatype'):
            violation('topics-nbirth-metrics', 'birth metric without name or datatype', topic)
            continue
        if metric_value(m) is None and not m.is_null:
            violation('operational-behavior-data-publish-nbirth-values', f'{m.name}: neither a value nor is_null', topic)
        if m.name == 'Node Control/Rebirth':
            continue
        if not m.HasField('alias'):
            violation('payloads-alias-birth-requirement', f'{m.name} without alias', topic)
            continue
        owner = node.aliases.get(m.alias)
        if owner is not None and owner != (device, m.name):
            violation('payloads-alias-uniqueness', f'alias {m.alias} used by {owner} and {(device, m.name)}', topic)
        node.aliases[m.alias] = (device, m.name)
        stable = node.names.setdefault((device, m.name), m.alias)
        if stable != m.alias:
            violation('aliases-stable', f'{m.name} alias {m.alias}, was {stable}', topic)


def build_payload(metrics):
    payload = spb.Payload()
    payload.timestamp = int(time.time() * 1000)
    for spec in metrics:
        m = payload.metrics.add()
        for key, value in spec.items():
            setattr(m, key, value)
    return payload.SerializeToString()


def read_subscriber(proc):
    for raw in proc.stdout:
        line = raw.decode('utf-8', 'replace').rstrip('\n')
        if line.startswith('Subscribed (mid:'):
            emit({'event': 'subscribed'})
            if args.announce:
                send_state(True)
        elif line.startswith('MSG '):
            _, topic, qos, retain, hexed = (line.split(' ', 4) + [''])[:5]
            try:
                handle(topic, int(qos), retain == '1', bytes.fromhex(hexed))
            except Exception as e:  # noqa: BLE001
                violation('host-error', repr(e), topic)


def die_with_host():
    # mosquitto_sub must not outlive this host, even when the host is SIGKILLed (PR_SET_PDEATHSIG).
    import ctypes
    ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, 9)


sub = subprocess.Popen(
    ['stdbuf', '-oL', 'mosquitto_sub', *mqtt_args(), '-d', '-q', '1', '-t', f'spBv1.0/{args.group}/#', '-F', 'MSG %t %q %r %x',
     '--will-topic', f'spBv1.0/STATE/{args.host_id}', '--will-qos', '1', '--will-retain',
     '--will-payload', json.dumps({'online': False, 'timestamp': int(time.time() * 1000)})],
    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, preexec_fn=die_with_host)
threading.Thread(target=read_subscriber, args=(sub,), daemon=True).start()

try:
    for raw in sys.stdin:
        if not raw.strip():
            continue
        command = json.loads(raw)
        node_prefix = f'spBv1.0/{args.group}'
        if command['cmd'] == 'state':
            send_state(command['online'], command.get('timestamp'))
        elif command['cmd'] == 'ncmd':
            publish(f"{node_prefix}/NCMD/{command['node']}", build_payload(command['metrics']))
        elif command['cmd'] == 'dcmd':
            publish(f"{node_prefix}/DCMD/{command['node']}/{command['device']}", build_payload(command['metrics']))
        elif command['cmd'] == 'raw':
            publish(command['topic'], bytes.fromhex(command['hex']))
        emit({'event': 'done', 'id': command.get('id')})
finally:
    sub.kill()
