#!/bin/sh
GROUPCAST_HEARTBEAT_INTERVAL=60s GROUPCAST_PRESENCE_TTL=180s exec /work/main/target/release/groupcast "$@"
