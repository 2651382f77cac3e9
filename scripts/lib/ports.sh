# Ports for the scripts that start Redis and nodes on loopback
# (bench.sh, profile.sh, instructions-per-delivery.sh). Source it.

# A free port below the ephemeral range (32768-60999 here), which the bench's
# thousands of client sockets use up.
free_port() {
    python3 -c '
import random, socket
for _ in range(200):
    port = random.randrange(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port)); print(port); break
    except OSError:
        pass
    finally:
        s.close()
'
}

# wait_port PORT [PID]: until something listens on PORT, up to
# WAIT_PORT_TRIES tenths of a second (default 100); fails at once if the
# process PID ended.
wait_port() {
    for _ in $(seq "${WAIT_PORT_TRIES:-100}"); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then
            echo "process $2 exited before listening on port $1" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}
