#!/usr/bin/env python3
"""The reference reading of Sigma rules over event files: pySigma + its SQLite backend.

Converts every rule under RULES (pySigma, `pysigma-backend-sqlite`, no processing
pipeline), loads each JSON event (and Windows XML event line) of FILE... into one SQLite table (one column per Sysmon
field name, TEXT COLLATE NOCASE, as the backend's own runtime does), runs each rule's query
restricted to the events of its log source, and prints one line per match:

    <file> TAB <line number> TAB <rule id>

Independent of iis-tagger's code: the flattening of the event shapes follows DESIGN §4
and pySigma's ecs_windows mapping; the log-source conditions follow the Sigma taxonomy
(process_creation = Sysmon 1 or Security 4688, registry_add = Sysmon 12 CreateKey, ...),
which the backend leaves out without a pipeline. Rules the backend cannot convert are
listed on stderr as `unconverted <id> <reason>`.

usage: scripts/sigma-reference.py RULES FILE...
"""
import json
import re
import sqlite3
import sys
import xml.etree.ElementTree as ET

from sigma.backends.sqlite import sqliteBackend
from sigma.collection import SigmaCollection

SYSMON = "Microsoft-Windows-Sysmon/Operational"
POWERSHELL = ["Microsoft-Windows-PowerShell/Operational", "PowerShellCore/Operational"]

# category -> [(channel, [event ids], [EventType values or empty])]
CATEGORIES = {
    "process_creation": [(SYSMON, [1], []), ("Security", [4688], [])],
    "file_change": [(SYSMON, [2], [])],
    "network_connection": [(SYSMON, [3], [])],
    "process_termination": [(SYSMON, [5], [])],
    "driver_load": [(SYSMON, [6], [])],
    "image_load": [(SYSMON, [7], [])],
    "create_remote_thread": [(SYSMON, [8], [])],
    "raw_access_thread": [(SYSMON, [9], [])],
    "process_access": [(SYSMON, [10], [])],
    "file_event": [(SYSMON, [11], [])],
    "registry_add": [(SYSMON, [12], ["CreateKey"])],
    "registry_delete": [(SYSMON, [12], ["DeleteKey", "DeleteValue"])],
    "registry_set": [(SYSMON, [13], [])],
    "registry_rename": [(SYSMON, [14], [])],
    "registry_event": [(SYSMON, [12, 13, 14], [])],
    "create_stream_hash": [(SYSMON, [15], [])],
    "pipe_created": [(SYSMON, [17, 18], [])],
    "wmi_event": [(SYSMON, [19, 20, 21], [])],
    "dns_query": [(SYSMON, [22], [])],
    "file_delete": [(SYSMON, [23, 26], [])],
    "ps_script": [(c, [4104], []) for c in POWERSHELL],
    "ps_module": [(c, [4103], []) for c in POWERSHELL],
}
SERVICES = {
    "iis-configuration": ["Microsoft-IIS-Configuration/Operational"],
    "security": ["Security"],
    "system": ["System"],
    "application": ["Application"],
    "sysmon": [SYSMON],
    "powershell": POWERSHELL,
}

# ECS / Winlogbeat names -> Sysmon names (pySigma's ecs_windows mapping, reversed).
ECS = {
    "event.code": "EventID",
    "winlog.event_id": "EventID",
    "winlog.channel": "Channel",
    "winlog.provider_name": "Provider_Name",
    "process.executable": "Image",
    "process.command_line": "CommandLine",
    "process.parent.executable": "ParentImage",
    "process.parent.command_line": "ParentCommandLine",
    "process.pe.original_file_name": "OriginalFileName",
    "process.pe.description": "Description",
    "process.pe.product": "Product",
    "process.pe.company": "Company",
    "process.working_directory": "CurrentDirectory",
    "process.pid": "ProcessId",
    "process.parent.pid": "ParentProcessId",
    "user.name": "User",
    "file.path": "TargetFilename",
    "registry.path": "TargetObject",
    "registry.data.strings": "Details",
    "dns.question.name": "QueryName",
    "destination.ip": "DestinationIp",
    "destination.port": "DestinationPort",
    "source.ip": "SourceIp",
}


def text(v):
    """A JSON value as the SQL text it is compared as; None for null and containers."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, str)):
        return str(v)
    if isinstance(v, list):
        for item in v:
            t = text(item)
            if t is not None:
                return t
    return None


def put(out, name, value):
    t = text(value)
    if t is not None and name not in out:
        out[name] = t


def walk_ecs(obj, prefix, out):
    for k, v in obj.items():
        path = prefix + k
        if path.startswith("winlog.event_data."):
            put(out, path[len("winlog.event_data."):], v)
        elif path in ECS:
            put(out, ECS[path], v)
        elif isinstance(v, dict):
            walk_ecs(v, path + ".", out)


def flatten(rec):
    """The Sysmon-named fields of one record, in any shape of DESIGN §4."""
    out = {}
    event = rec.get("Event")
    if isinstance(event, dict):
        system = event.get("System") or {}
        eid = system.get("EventID")
        if isinstance(eid, dict):
            eid = eid.get("#text")
        put(out, "EventID", eid)
        put(out, "Channel", system.get("Channel"))
        put(out, "Provider_Name", ((system.get("Provider") or {}).get("#attributes") or {}).get("Name"))
        put(out, "Computer", system.get("Computer"))
        data = event.get("EventData")
        if isinstance(data, dict):
            for k, v in data.items():
                if not k.startswith("#"):
                    put(out, k, v)
    else:
        for k, v in rec.items():
            if not isinstance(v, (dict, list)):
                put(out, k, v)
        if "EventCode" in rec:
            put(out, "EventID", rec["EventCode"])
        walk_ecs({k: v for k, v in rec.items() if isinstance(v, dict)}, "", out)
    return security_names(out)


def security_names(out):
    """Security 4688 names the processes otherwise (the Sigma taxonomy's process_creation_2)."""
    if "NewProcessName" in out:
        out.setdefault("Image", out["NewProcessName"])
    if "ParentProcessName" in out:
        out.setdefault("ParentImage", out["ParentProcessName"])
    return out


def local(tag):
    """An element name without its namespace."""
    return tag.rsplit("}", 1)[-1]


def flatten_xml(raw):
    """The Sysmon-named fields of one Windows XML event line (Python's own XML parser),
    as flatten() reads the same event in evtx_dump JSON; None when it is not an event."""
    try:
        root = ET.fromstring(raw)
    except ET.ParseError:
        return None
    if local(root.tag) != "Event":
        return None
    out = {}
    for part in root:
        if local(part.tag) == "System":
            for child in part:
                name = local(child.tag)
                if name == "Provider":
                    put(out, "Provider_Name", child.get("Name"))
                elif name in ("EventID", "Channel", "Computer"):
                    put(out, name, child.text)
        elif local(part.tag) == "EventData":
            for data in part:
                if local(data.tag) == "Data" and data.get("Name") is not None:
                    put(out, data.get("Name"), data.text)
    return security_names(out)


def quote(s):
    return "'" + s.replace("'", "''") + "'"


def route_sql(logsource):
    """The SQL condition of a rule's log source (None: it names one this table lacks)."""
    parts = []
    if logsource.category:
        sources = CATEGORIES.get(logsource.category)
        if sources is None:
            return None
        alts = []
        for channel, ids, types in sources:
            cond = "(" + " OR ".join("EventID=" + quote(str(i)) for i in ids) + ") AND Channel=" + quote(channel)
            if types:
                cond += " AND (" + " OR ".join("EventType=" + quote(t) for t in types) + ")"
            alts.append("(" + cond + ")")
        parts.append("(" + " OR ".join(alts) + ")")
    if logsource.service:
        channels = SERVICES.get(logsource.service)
        if channels is None:
            return None
        parts.append("(" + " OR ".join("Channel=" + quote(c) for c in channels) + ")")
    return " AND ".join(parts) if parts else "1"


def main():
    rules_dir, files = sys.argv[1], sys.argv[2:]
    collection = SigmaCollection.load_ruleset([rules_dir])
    backend = sqliteBackend()
    queries = []
    for rule in collection.rules:
        try:
            converted = backend.convert_rule(rule)
        except Exception as e:  # noqa: BLE001 - every refusal is reported
            print(f"unconverted {rule.id} {type(e).__name__}: {e}", file=sys.stderr)
            continue
        route = route_sql(rule.logsource)
        if route is None:
            print(f"unconverted {rule.id} logsource {rule.logsource}", file=sys.stderr)
            continue
        for q in converted:
            where = q.split(" WHERE ", 1)[1]
            queries.append((str(rule.id), f"SELECT src, line FROM logs WHERE ({where}) AND ({route})"))
    rows = []
    columns = {"EventID", "Channel", "EventType"}
    for path in files:
        with open(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                if raw.lstrip().startswith(b"<"):
                    fields = flatten_xml(raw)
                    if fields is not None:
                        columns.update(fields)
                        rows.append((path, n, fields))
                    continue
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(rec, dict):
                    fields = flatten(rec)
                    columns.update(fields)
                    rows.append((path, n, fields))
    # Every column a query names must exist (a missing field is NULL).
    for _, sql in queries:
        columns.update(re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)\b(?=\s*(?:=|LIKE|REGEXP|GLOB|IS|<|>|!=))", sql))
    columns = sorted(c for c in columns if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", c))
    db = sqlite3.connect(":memory:")
    db.create_function("regexp", 2, lambda p, v: v is not None and re.search(p, str(v)) is not None, deterministic=True)
    folded = {c.lower(): c for c in columns}
    db.execute("CREATE TABLE logs (src TEXT, line INTEGER, " + ", ".join(f'"{c}" TEXT COLLATE NOCASE' for c in folded.values()) + ")")
    names = list(folded.values())
    insert = "INSERT INTO logs VALUES (?, ?, " + ", ".join("?" for _ in names) + ")"
    for src, n, fields in rows:
        lower = {k.lower(): v for k, v in fields.items()}
        db.execute(insert, [src, n] + [lower.get(c.lower()) for c in names])
    out = sys.stdout
    for rule_id, sql in queries:
        try:
            for src, n in db.execute(sql):
                out.write(f"{src}\t{n}\t{rule_id}\n")
        except sqlite3.Error as e:
            print(f"unconverted {rule_id} sqlite: {e}", file=sys.stderr)


if __name__ == "__main__":
    main()
