#!/usr/bin/env python3
"""Helpers of scripts/autobahn.sh: the wstest spec and the summary.

  autobahn-report.py plan JOBS RUN=PATTERN,PATTERN... ...
      splits the cases of the runs into JOBS parts of about equal cost;
      prints "PART RUN CASE..." lines (a part runs its lines in turn)
  autobahn-report.py spec OUT URL AGENT CASE...   writes a fuzzingclient spec
  autobahn-report.py progress RUN_DIR TOTAL       "started/TOTAL" cases
  autobahn-report.py summary [--docs FILE --command CMD --binary TEXT]
                             NAME=RUN_DIR...
      merges the parts' index.json into RUN_DIR/index.json, then:

summary prints, per run, a table of case groups by behaviour, lists the
cases that FAILED (with their description), and exits 1 when a case FAILED
or 6.4.3 / 6.4.4 (fail-fast on invalid UTF-8) is not strictly OK. With
--docs it rewrites the part of FILE between the autobahn markers.
"""
import datetime
import fnmatch
import glob
import html
import json
import os
import re
import sys

BEHAVIOURS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
MUST_BE_OK = ["6.4.3", "6.4.4"]
BEGIN, END = "<!-- autobahn:begin -->", "<!-- autobahn:end -->"

# wstest's own names (autobahntestsuite/case/__init__.py), for when a
# report has no index.html to read them from.
GROUP_NAMES = {
    "1": "Framing", "2": "Pings/Pongs", "3": "Reserved Bits", "4": "Opcodes",
    "5": "Fragmentation", "6": "UTF-8 Handling", "7": "Close Handling",
    "8": "Misc", "9": "Limits/Performance", "10": "Misc",
    "12": "WebSocket Compression (different payloads)",
    "13": "WebSocket Compression (different parameters)",
}


def case_key(case_id):
    return tuple(int(p) for p in case_id.split("."))


# The cases of autobahntestsuite 0.8.2 (517): groups 2, 3 and 5 number
# their cases N.M, the others by sub-group, N.M.K.
SUBGROUPS = (
    [("1.1", 8), ("1.2", 8), ("4.1", 5), ("4.2", 5)]
    + list(zip(["6.%d" % i for i in range(1, 24)],
               [3, 4, 2, 4, 5, 11, 4, 2, 4, 3, 5, 8, 5, 10, 1, 3, 5, 5, 5, 7, 8, 34, 7]))
    + [("7.1", 6), ("7.3", 6), ("7.5", 1), ("7.7", 13), ("7.9", 9), ("7.13", 2)]
    + [("9.%d" % i, n) for i, n in zip(range(1, 9), [6, 6, 9, 9, 6, 6, 6, 6])]
    + [("10.1", 1)]
    + [("12.%d" % i, 18) for i in range(1, 6)] + [("13.%d" % i, 18) for i in range(1, 8)]
)
ALL_CASES = sorted(
    ["%s.%d" % (sg, i) for sg, n in SUBGROUPS for i in range(1, n + 1)]
    + ["2.%d" % i for i in range(1, 12)] + ["3.%d" % i for i in range(1, 8)]
    + ["5.%d" % i for i in range(1, 21)],
    key=lambda c: tuple(int(p) for p in c.split(".")))
# 12.x and 13.x: 1000 messages each of these sizes (case12_x_x.py).
MSG_SIZES = [16, 64, 256, 1024, 4096, 8192, 16384, 32768, 65536, 131072,
             8192, 16384, 32768, 65536, 131072, 131072, 131072, 131072]
TEXT_SUBGROUPS = {"12.1", "12.4"} | {"13.%d" % i for i in range(1, 8)}
DECLINED = {"13.3", "13.5"}  # only window bits 9 offered: the server declines


def case_cost(run, cid):
    """Rough seconds of wstest's time (it, not the server, is the bound):
    ~12 MB/s through its permessage-deflate, ~3 MB/s more for text with
    wsaccel's UTF-8 validator (AUTOBAHN_FAST_UTF8=0)."""
    g, sg = cid.split(".")[0], ".".join(cid.split(".")[:2])
    if g in ("12", "13"):
        if run != "compressed" or sg in DECLINED:
            return 0.2
        size = MSG_SIZES[int(cid.split(".")[2]) - 1]
        return 0.5 + 1000.0 * size / (8e6 if sg in TEXT_SUBGROUPS else 12e6)
    if g == "9":
        return 0.5
    return 0.05


def plan(jobs, runs):
    """LPT: the costliest item first, into the part with the least cost.
    Items: each 12.x/13.x case of the compressed run, each 9.x sub-group,
    and the rest of a run in one."""
    items = []
    for run, patterns in runs:
        ids, other = [], []
        for p in patterns:
            hit = [c for c in ALL_CASES if fnmatch.fnmatchcase(c, p)]
            if not hit:
                other.append(p)  # unknown to this table: let wstest decide
            ids += [c for c in hit if c not in ids]
        cheap, nine = list(other), {}
        for c in ids:
            cost = case_cost(run, c)
            if cost >= 1.0 and c.startswith(("12.", "13.")):
                items.append((cost, run, [c]))
            elif c.startswith("9."):
                nine.setdefault(c.rsplit(".", 1)[0], []).append(c)
            else:
                cheap.append(c)
        for sg, cs in nine.items():
            items.append((sum(case_cost(run, c) for c in cs), run, cs))
        if cheap:
            items.append((sum(case_cost(run, c) for c in cheap) + 5, run, cheap))
    parts = [[0.0, {}] for _ in range(max(1, jobs))]
    for cost, run, cs in sorted(items, key=lambda it: -it[0]):
        part = min(parts, key=lambda p: p[0])
        part[0] += cost
        part[1].setdefault(run, []).extend(cs)
    for n, (cost, by_run) in enumerate(parts):
        for run, cs in by_run.items():
            print("%d %s %s" % (n, run, " ".join(sorted(cs, key=sort_key))))


def sort_key(cid):
    try:
        return (0, case_key(cid))
    except ValueError:
        return (1, cid)


def spec(out, url, agent, cases):
    doc = {
        "outdir": ".",
        "servers": [{"agent": agent, "url": url}],
        "cases": cases,
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }
    with open(out, "w") as f:
        json.dump(doc, f, indent=2)


def progress(run_dir, total):
    """Cases started so far, from the wstest.log of each part."""
    done = 0
    for log in glob.glob(os.path.join(run_dir, "part-*", "wstest.log")):
        with open(log, errors="replace") as f:
            done += sum(1 for line in f if "Running test case ID" in line)
    print("%d/%s" % (done, total))


def merge(run_dir):
    """The parts' index.json as one, in run_dir (report files named from it)."""
    merged = {}
    for index in sorted(glob.glob(os.path.join(run_dir, "part-*", "index.json"))):
        part = os.path.basename(os.path.dirname(index))
        with open(index) as f:
            for agent, cases in json.load(f).items():
                for cid, entry in cases.items():
                    if entry.get("reportfile"):
                        entry["reportfile"] = part + "/" + entry["reportfile"]
                    merged.setdefault(agent, {})[cid] = entry
    if not merged:
        sys.exit("no report in %s/part-*/index.json" % run_dir)
    with open(os.path.join(run_dir, "index.json"), "w") as f:
        json.dump(merged, f, indent=2, sort_keys=True)


def group_names(run_dir):
    names = dict(GROUP_NAMES)
    for page in glob.glob(os.path.join(run_dir, "part-*", "index.html")):
        with open(page, errors="replace") as f:
            for num, name in re.findall(r'<td class="case_category">(\d+) (.*?)</td>', f.read()):
                names[num] = html.unescape(name)
    return names


def load_run(run_dir):
    """{case_id: entry} from the run's index.json, each entry with the
    description from the case's own report."""
    with open(os.path.join(run_dir, "index.json")) as f:
        index = json.load(f)
    cases = {}
    for agent_cases in index.values():
        for case_id, entry in agent_cases.items():
            entry = dict(entry)
            report = entry.get("reportfile")
            entry["description"] = ""
            entry["result"] = ""
            if report and os.path.exists(os.path.join(run_dir, report)):
                with open(os.path.join(run_dir, report)) as f:
                    detail = json.load(f)
                entry["description"] = detail.get("description", "")
                entry["result"] = detail.get("result", "")
            cases[case_id] = entry
    return cases


def one_line(text, width=160):
    text = re.sub(r"<[^>]+>", "", html.unescape(text or ""))
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def ranges(ids):
    """Case ids in short form: 12.* for a whole group, 13.3.* for a whole
    sub-group, 6.4.1-6.4.3 for a run of one sub-group."""
    ids = set(ids)
    out, rest = [], []
    groups = {}
    for c in ALL_CASES:
        groups.setdefault(c.split(".")[0], []).append(c)
    subgroups = {}
    for c in ALL_CASES:
        if c.count(".") == 2:
            subgroups.setdefault(c.rsplit(".", 1)[0], []).append(c)
    for g, cs in groups.items():
        if len(cs) > 1 and ids.issuperset(cs):
            out.append((case_key(cs[0]), g + ".*"))
            ids -= set(cs)
    for sg, cs in subgroups.items():
        if len(cs) > 1 and ids.issuperset(cs):
            out.append((case_key(cs[0]), sg + ".*"))
            ids -= set(cs)
    run = []

    def flush():
        if len(run) > 2:
            out.append((case_key(run[0]), "%s-%s" % (run[0], run[-1])))
        else:
            out.extend((case_key(c), c) for c in run)

    for cid in sorted(ids, key=case_key):
        if run:
            a, b = case_key(run[-1]), case_key(cid)
            if a[:-1] == b[:-1] and b[-1] == a[-1] + 1:
                run.append(cid)
                continue
            flush()
        run = [cid]
    if run:
        flush()
    return ", ".join(text for _, text in sorted(out))


def table(name, cases, names):
    groups = {}
    for cid, entry in cases.items():
        g = cid.split(".")[0]
        counts = groups.setdefault(g, dict.fromkeys(BEHAVIOURS + ["other"], 0))
        b = entry.get("behavior", "")
        counts[b if b in counts else "other"] += 1
    cols = BEHAVIOURS + (["other"] if any(c["other"] for c in groups.values()) else [])
    lines = ["| %s: group | %s |" % (name, " | ".join(cols)),
             "| --- | " + " | ".join("---:" for _ in cols) + " |"]
    total = dict.fromkeys(cols, 0)
    for g in sorted(groups, key=int):
        row = groups[g]
        for c in cols:
            total[c] += row[c]
        lines.append("| %s %s | %s |" % (g, names.get(g, ""), " | ".join(str(row[c]) for c in cols)))
    lines.append("| **all %d cases** | %s |" % (
        sum(total.values()), " | ".join("**%d**" % total[c] for c in cols)))
    return lines


def summarize(runs):
    """Markdown lines for every run, and the problems that fail the run."""
    lines, problems = [], []
    for name, run_dir in runs:
        cases = load_run(run_dir)
        lines += table(name, cases, group_names(run_dir)) + [""]
        by = {}
        for cid, e in cases.items():
            by.setdefault(e.get("behavior"), []).append(cid)
        for b in ("NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"):
            if by.get(b):
                lines.append("* %s, %s: %s" % (name, b, ranges(by[b])))
        unclean = [c for c, e in cases.items()
                   if e.get("behaviorClose") not in ("OK", "INFORMATIONAL")
                   and e.get("behavior") != "FAILED"]
        if unclean:
            lines.append("* %s, closing behaviour not OK: %s" % (name, ", ".join(
                "%s (%s)" % (c, cases[c].get("behaviorClose")) for c in sorted(unclean, key=case_key))))
        for cid in sorted(by.get("FAILED", []), key=case_key):
            e = cases[cid]
            problems.append("%s %s FAILED: %s -- %s" % (
                name, cid, one_line(e["description"]), one_line(e["result"], 200)))
        for cid in MUST_BE_OK:
            if cid in cases and cases[cid].get("behavior") != "OK":
                problems.append("%s %s is %s, must be OK (strict): %s -- %s" % (
                    name, cid, cases[cid].get("behavior"), one_line(cases[cid]["description"]),
                    one_line(cases[cid]["result"], 200)))
        if lines[-1] != "":
            lines.append("")
    return lines, problems


def rewrite_docs(path, body):
    with open(path) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        sys.exit("%s has no %s ... %s markers" % (path, BEGIN, END))
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w") as f:
        f.write(head + BEGIN + "\n" + body + END + tail)


def main(argv):
    if len(argv) >= 5 and argv[1] == "spec":
        return spec(argv[2], argv[3], argv[4], argv[5:])
    if len(argv) == 4 and argv[1] == "progress":
        return progress(argv[2], argv[3])
    if len(argv) >= 4 and argv[1] == "plan":
        return plan(int(argv[2]), [(a.split("=", 1)[0], a.split("=", 1)[1].split(",")) for a in argv[3:]])
    if len(argv) < 3 or argv[1] != "summary":
        sys.exit(__doc__)
    args, opts = [], {}
    it = iter(argv[2:])
    for a in it:
        if a in ("--docs", "--command", "--binary"):
            opts[a] = next(it)
        else:
            args.append(a)
    runs = [tuple(a.split("=", 1)) for a in args]
    for _, run_dir in runs:
        merge(run_dir)
    lines, problems = summarize(runs)
    print("\n".join(lines))
    if problems:
        print("PROBLEMS (%d):" % len(problems))
        for p in problems:
            print("  " + p)
    else:
        print("no case FAILED; 6.4.3 and 6.4.4 are OK")
    if "--docs" in opts:
        body = [
            "Last full run: `%s` on %s, binary %s." % (
                opts.get("--command", "scripts/autobahn.sh"),
                datetime.date.today().isoformat(), opts.get("--binary", "?")),
            "",
        ] + lines
        if problems:
            body += ["Problems:", ""] + ["* " + p for p in problems] + [""]
        rewrite_docs(opts["--docs"], "\n".join(body))
        print("rewrote the summary in %s" % opts["--docs"])
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
