// Pyodide on Node as a peer of bench/peers/run.py.
//   node pyodide_peer.mjs NODE_MODULES cold CODE
//       load Pyodide, run CODE, exit: the cold start.
//   node pyodide_peer.mjs NODE_MODULES serve WORKLOAD.py
//       load Pyodide, run WORKLOAD.py's definitions, print `ready {"load_seconds": …}`,
//       then serve its line protocol: "E…" → the line passed through a Python function and
//       back; "C<scale>" → seconds timed_cpu(scale) took inside Pyodide.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";

const [modules, mode, arg] = process.argv.slice(2);
const require = createRequire(path.join(path.resolve(modules), "loader.js"));
const { loadPyodide } = require("pyodide");

const started = performance.now();
const py = await loadPyodide({ stdout: (line) => process.stdout.write(line + "\n") });
const loadSeconds = (performance.now() - started) / 1000;

if (mode === "cold") {
  py.runPython(arg);
} else if (mode === "serve") {
  py.runPython(readFileSync(arg, "utf8").split("\nif __name__")[0]);
  const echo = py.runPython("lambda line: line");
  const timedCpu = py.globals.get("timed_cpu");
  process.stdout.write("ready " + JSON.stringify({ load_seconds: loadSeconds }) + "\n");
  for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
    if (line.startsWith("E")) {
      process.stdout.write(echo(line) + "\n");
    } else if (line.startsWith("C")) {
      process.stdout.write(String(timedCpu(parseInt(line.slice(1), 10))) + "\n");
    } else {
      process.stdout.write("?\n");
    }
  }
} else {
  process.stderr.write(`usage: node pyodide_peer.mjs NODE_MODULES cold CODE | serve WORKLOAD.py\n`);
  process.exit(2);
}
