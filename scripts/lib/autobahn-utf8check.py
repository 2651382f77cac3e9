# Python 2: run by scripts/lib/autobahn-setup.sh with the private CPython
# 2.7. Feeds wsaccel.utf8validator (whichever is importable) a fixed set of
# inputs -- wstest's own UTF-8 cases, every 1-4 octet sequence's edges,
# random valid and broken text, random octets -- in random chunks, and
# prints a digest of every answer: two validators that print the same
# digest answered alike.
import hashlib
import random
import sys

site_dir = sys.argv[1]
import site
site.addsitedir(site_dir)
from wsaccel.utf8validator import Utf8Validator
from autobahntestsuite.case.case6_x_x import Case6_X_X  # noqa: wstest's 6.x

rng = random.Random(7692)
inputs = []
for case in Case6_X_X:
    payload = getattr(case, "PAYLOAD", None)
    if isinstance(payload, str):
        inputs.append(payload)
for cp in (0x7f, 0x80, 0x7ff, 0x800, 0xd7ff, 0xd800, 0xdfff, 0xe000, 0xfffd, 0xffff,
           0x10000, 0x10ffff, 0x110000):
    for n in (1, 2, 3, 4):
        for lead in range(256):
            inputs.append(chr(lead) + "".join(chr(0x80 | ((cp >> (6 * k)) & 0x3f)) for k in range(n - 1)))
for _ in range(3000):
    cps = [rng.choice((rng.randrange(0x80), rng.randrange(0x800), rng.randrange(0xd800),
                       rng.randrange(0xe000, 0x110000))) for _ in range(rng.randrange(40))]
    s = u"".join(unichr(c) for c in cps).encode("utf-8")
    if s and rng.random() < 0.5:
        k = rng.randrange(len(s))
        s = s[:k] + chr(rng.randrange(256)) + s[k + 1:]
    inputs.append(s)
for _ in range(3000):
    inputs.append("".join(chr(rng.randrange(256)) for _ in range(rng.randrange(24))))
inputs.append("".join(chr(rng.randrange(128)) for _ in range(1 << 20)))

h = hashlib.sha256()
v = Utf8Validator()
for s in inputs:
    v.reset()
    pos = 0
    while True:
        step = rng.choice((1, 2, 3, 7, 64, len(s) + 1))
        chunk = s[pos:pos + step]
        r = v.validate(bytearray(chunk) if rng.random() < 0.2 else chunk)
        h.update(repr((r, v.i, v.state)))
        pos += step
        if not r[0] or pos >= len(s):
            break
v.reset()
for _ in range(20000):
    h.update(repr((v.decode(rng.randrange(256)), v.state, v.codepoint)))
    if v.state == Utf8Validator.UTF8_REJECT:
        v.reset()
h.update(repr((Utf8Validator.UTF8_ACCEPT, Utf8Validator.UTF8_REJECT)))
print("%d inputs %s" % (len(inputs), h.hexdigest()))
