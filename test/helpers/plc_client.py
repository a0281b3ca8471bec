"""A PLC's side of the trigger contract, with a client we did not write: Eclipse Paho (Debian's
python3-paho-mqtt) over MQTT 5, with a persistent session like a PLC gateway keeps.

Reads commands as JSON lines on stdin, writes what it sees as JSON lines on stdout:
  {"op": "trigger", "camera": "cam1", "payload": "<text sent as is>"}   -> {"event": "sent", ...}
  {"op": "publish", "topic": "<below PREFIX/>", "payload": "<text>"}   -> {"event": "sent", ...}
  {"op": "quit"}
  events: {"event": "connected", "sessionPresent": bool}, {"event": "disconnected"},
          {"event": "message", "topic": ..., "retain": bool, "json": <payload parsed or null>}

Usage: plc_client.py HOST PORT PREFIX CLIENT_ID
"""
import json
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

host, port, prefix, client_id = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
out_lock = threading.Lock()


def emit(event):
    with out_lock:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def on_connect(client, _userdata, flags, reason_code, _properties):
    # Subscribe on every connect: a broker that lost the session has lost the subscription too.
    client.subscribe(prefix + "/#", qos=1)
    emit({"event": "connected", "sessionPresent": bool(flags.get("session present")), "reasonCode": str(reason_code)})


def on_disconnect(_client, _userdata, reason_code, _properties=None):
    emit({"event": "disconnected", "reasonCode": str(reason_code)})


def on_message(_client, _userdata, message):
    try:
        payload = json.loads(message.payload.decode("utf-8"))
    except ValueError:
        payload = None
    emit({"event": "message", "topic": message.topic, "retain": bool(message.retain), "json": payload})


client = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv5)
client.on_connect = on_connect
client.on_disconnect = on_disconnect
client.on_message = on_message
client.reconnect_delay_set(min_delay=1, max_delay=1)
connect_properties = Properties(PacketTypes.CONNECT)
connect_properties.SessionExpiryInterval = 300
client.connect(host, port, keepalive=10, clean_start=False, properties=connect_properties)
client.loop_start()

for line in sys.stdin:
    command = json.loads(line)
    if command["op"] == "quit":
        break
    if command["op"] == "trigger":
        info = client.publish(prefix + "/" + command["camera"] + "/trigger", command["payload"].encode("utf-8"), qos=1)
        emit({"event": "sent", "payload": command["payload"], "rc": info.rc})
    if command["op"] == "publish":
        info = client.publish(prefix + "/" + command["topic"], command["payload"].encode("utf-8"), qos=1)
        emit({"event": "sent", "payload": command["payload"], "rc": info.rc})

client.disconnect()
client.loop_stop()
