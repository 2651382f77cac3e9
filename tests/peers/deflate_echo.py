#!/usr/bin/env python3
"""An independent permessage-deflate peer for groupcast's regression tests
(tests/wire/deflate_peers.rs): the `websockets` library (PyPI) as the client.

    deflate_echo.py ws://127.0.0.1:PORT/ws/GROUP FIXTURES_DIR

Connects with websockets' default offer (permessage-deflate), checks that
the server's answer negotiated it, then sends every payload of `payloads()`
(0 B to 256 KiB: multilingual and base64 text, random bytes, and slices of
the bitmap and the PDF in FIXTURES_DIR every 32 KiB through each file) to
a group that echoes (a one-member group forwards what its member sends
to its members): text as str, binary as bytes, each once as one frame and
once fragmented into several frames. The client compresses what it sends
(the server inflates), the server compresses its echo (the client
inflates); every echo is compared byte for byte with what was sent.

Prints one JSON summary on stdout (counts, bytes sent, the negotiated
extension, every failure with its lengths and first differing byte) and
exits 1 on any mismatch, error or an un-negotiated extension. After a
wrong echo, or a failure that ends the connection (websockets' 1009 when a
cut-short stream inflates to garbage, say), it connects again and goes on,
so the summary names every failing payload, each judged on its own.

Needs `websockets` (scripts/install-test-deps.sh puts it in a private
venv, target/py-peers/).
"""

import asyncio
import base64
import json
import os
import random
import sys

import websockets
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException
from websockets.extensions.permessage_deflate import PerMessageDeflate

# The sizes of RFC 6455's length encodings and their edges, 64 KiB and its
# neighbours (where the compressor's sync flush spilled over), and on to
# 256 KiB.
SIZES = [0, 1, 125, 126, 127, 1000, 4096, 16384, 65535, 65536, 65537, 100000, 131072, 200000, 262144]

# Words in 1-, 2-, 3- and 4-byte UTF-8.
WORDS = (
    "deflate frame fragment window sync flush group broadcast session member "
    "größe naïve café façade über déjà señal "
    "сжатие сообщение группа συμπίεση μήνυμα "
    "圧縮 メッセージ 群発信 窗口 压缩 데이터 "
    "🙂 🚀 ✓ ∑ → ‰ 𝄞"
).split()

RECEIVE_TIMEOUT = 10.0


def prose(size, seed):
    """Valid UTF-8 text of exactly `size` bytes: multilingual words and
    numbers (compresses to about a third)."""
    rng = random.Random(seed)
    parts, length = [], 0
    while length < size:
        word = rng.choice(WORDS) if rng.random() < 0.85 else str(rng.getrandbits(24))
        parts.append(word)
        length += len(word.encode()) + 1
    encoded = " ".join(parts).encode()[:size]
    text = encoded.decode("utf-8", errors="ignore")  # drops a cut character
    return text + "." * (size - len(text.encode()))


def base64_text(size, seed):
    """ASCII text of exactly `size` bytes: base64 of random bytes, in lines
    (compresses to about three quarters: medium compressibility)."""
    raw = random.Random(seed).randbytes(size)
    encoded = base64.encodebytes(raw).decode("ascii")
    return encoded[:size]


def random_bytes(size, seed):
    """Incompressible bytes (the server sends these uncompressed)."""
    return random.Random(seed).randbytes(size)


# Slices of the bitmap and the PDF start every this many bytes, through the
# whole file (Autobahn's cases, too, walk their files): whether a slice
# compresses to a message that once came back short depends on where it
# starts, so one slice per size is not enough.
SLICE_STRIDE = 32768


def slices(data, size):
    """(offset, slice) of `size` bytes every SLICE_STRIDE through `data`."""
    return [(o, data[o : o + size]) for o in range(0, len(data) - size + 1, SLICE_STRIDE)]


def payloads(fixtures):
    """(name, payload): str for text, bytes for binary. Names are
    KIND/SIZE, and @OFFSET for file slices."""
    files = {}
    for kind, name in (("binary-bmp", "image.bmp"), ("binary-pdf", "document.pdf")):
        with open(os.path.join(fixtures, name), "rb") as f:
            files[kind] = f.read()
    out = []
    for size in SIZES:
        out.append(("text-prose/%d" % size, prose(size, seed=size)))
        out.append(("text-base64/%d" % size, base64_text(size, seed=size + 1)))
        out.append(("binary-random/%d" % size, random_bytes(size, seed=size + 2)))
        for kind, data in files.items():
            for offset, piece in slices(data, size):
                out.append(("%s/%d@%d" % (kind, size, offset), piece))
    for name, payload in out:
        size = int(name.split("/")[1].split("@")[0])
        length = len(payload.encode()) if isinstance(payload, str) else len(payload)
        assert length == size, (name, length)
    return out


def fragments(payload):
    """The payload cut into four uneven fragments (empty ones for the
    shortest payloads): websockets sends an iterable as one fragmented
    message, each fragment in its own frame."""
    n = len(payload)
    cuts = [0, n // 7, n // 2, (n * 5) // 6, n]
    return [payload[a:b] for a, b in zip(cuts, cuts[1:])]


def as_bytes(message):
    return message.encode() if isinstance(message, str) else bytes(message)


def first_difference(sent, got):
    for i, (a, b) in enumerate(zip(sent, got)):
        if a != b:
            return i
    return None if len(sent) == len(got) else min(len(sent), len(got))


def negotiated(ws):
    header = ws.response.headers.get("Sec-WebSocket-Extensions", "")
    active = any(isinstance(e, PerMessageDeflate) for e in ws.protocol.extensions)
    return header, active


async def run(url, fixtures):
    summary = {
        "url": url,
        "websockets": websockets.__version__,
        "extensions": None,
        "messages": 0,
        "ok": 0,
        "failed": 0,
        "sent_bytes": 0,
        "connections": 0,
        "first_mismatch": None,
        "failures": [],
    }
    ws = None

    async def open_connection():
        nonlocal ws
        # websockets' default: compression="deflate", i.e. it offers
        # "permessage-deflate; client_max_window_bits".
        ws = await connect(url, max_size=4 << 20, open_timeout=RECEIVE_TIMEOUT)
        summary["connections"] += 1
        header, active = negotiated(ws)
        summary["extensions"] = header
        if "permessage-deflate" not in header or not active:
            summary["failures"].append(
                {"error": "permessage-deflate not negotiated: %r" % header}
            )
            return False
        return True

    if not await open_connection():
        summary["failed"] += 1
        return summary

    for name, payload in payloads(fixtures):
        for fragmented in (False, True):
            label = name + (" (fragmented)" if fragmented else "")
            sent = as_bytes(payload)
            summary["messages"] += 1
            summary["sent_bytes"] += len(sent)
            failure = {
                "payload": label,
                "kind": "text" if isinstance(payload, str) else "binary",
                "sent_len": len(sent),
            }
            try:
                if ws is None and not await open_connection():
                    raise WebSocketException("permessage-deflate not negotiated")
                await ws.send(fragments(payload) if fragmented else payload)
                echo = await asyncio.wait_for(ws.recv(), RECEIVE_TIMEOUT)
            except (WebSocketException, asyncio.TimeoutError, OSError) as error:
                # No echo to compare: the connection ended, or the echo could
                # not be read ("sent 1009 ... exceeds limit": a cut-short
                # deflate stream that inflated to garbage past max_size).
                failure["error"] = "%s: %s" % (type(error).__name__, error)
                summary["failed"] += 1
                summary["failures"].append(failure)
                summary["first_mismatch"] = summary["first_mismatch"] or failure
                if ws is not None:
                    await ws.close()
                ws = None
                continue
            got = as_bytes(echo)
            same_kind = isinstance(echo, str) == isinstance(payload, str)
            if same_kind and got == sent:
                summary["ok"] += 1
                continue
            failure["got_len"] = len(got)
            failure["got_kind"] = "text" if isinstance(echo, str) else "binary"
            failure["first_diff"] = first_difference(sent, got)
            summary["failed"] += 1
            summary["failures"].append(failure)
            summary["first_mismatch"] = summary["first_mismatch"] or failure
            # Each message on a fresh connection after a wrong one, so that
            # no state left by it can make the next one fail too.
            await ws.close()
            ws = None
    if ws is not None:
        await ws.close()
    return summary


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: deflate_echo.py WS_URL FIXTURES_DIR")
    summary = asyncio.run(run(sys.argv[1], sys.argv[2]))
    print(json.dumps(summary, indent=1))
    sys.exit(0 if summary["failed"] == 0 and summary["messages"] > 0 else 1)


if __name__ == "__main__":
    main()
