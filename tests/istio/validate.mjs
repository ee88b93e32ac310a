// Validates Istio objects against Istio's CRD schemas, offline, as the API server would with
// `kubectl apply --validate=strict` (the default): the schema of each object's kind and
// version (types, enums, required fields), and no field the schema does not declare.
//
// The schemas come from the npm package @kubernetes-models/istio (installed by scripts/setup
// from this folder's package-lock.json), which is generated from Istio's CRD YAML:
//   - its model classes carry ajv validators compiled from each CRD's openAPIV3Schema;
//   - its TypeScript declarations carry the same schema's properties, so the TypeScript
//     compiler's excess-property check finds fields no schema declares (Istio's CRDs do not
//     set additionalProperties: false; the API server rejects unknown fields itself).
// What neither checks: CEL rules (x-kubernetes-validations) and istiod's own semantic checks.
//
// Usage: node validate.mjs objects.json   (a JSON array of objects, each with a "source" label
// under the key "__source"). Prints one line per problem; exit 1 if any.
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import ts from "typescript";

const here = dirname(fileURLToPath(import.meta.url));
const objects = JSON.parse(readFileSync(process.argv[2], "utf8"));
const problems = [];
const typed = [];

for (const [i, raw] of objects.entries()) {
  const { __source: source, ...obj } = raw;
  const [group, version] = String(obj.apiVersion || "").split("/");
  const module = `@kubernetes-models/istio/${group}/${version}/${obj.kind}`;
  let Model;
  try {
    Model = (await import(module))[obj.kind];
  } catch {
    problems.push(`${source}: no Istio schema for ${obj.apiVersion} ${obj.kind}`);
    continue;
  }
  try {
    new Model(obj).validate();
  } catch (err) {
    problems.push(`${source}: ${obj.kind} ${obj.metadata?.name}: ${err.message}`);
  }
  typed.push({ i, source, module, iface: `I${obj.kind}`, obj });
}

if (typed.length) {
  // One .ts file: each object as a literal of its kind's interface.
  const dir = mkdtempSync(join(here, ".check-"));
  try {
    const file = join(dir, "objects.ts");
    const lines = [];
    const where = [];
    for (const t of typed) {
      lines.push(`import type { ${t.iface} as T${t.i} } from "${t.module}";`);
    }
    for (const t of typed) {
      const text = `export const o${t.i}: T${t.i} = ${JSON.stringify(t.obj, null, 1)};`;
      const start = lines.length;
      lines.push(...text.split("\n"));
      where.push({ start, end: lines.length, t });
    }
    writeFileSync(file, lines.join("\n"));
    const program = ts.createProgram([file], {
      noEmit: true, strict: true, skipLibCheck: true, types: [],
      module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
      target: ts.ScriptTarget.ES2022,
    });
    for (const d of ts.getPreEmitDiagnostics(program)) {
      const msg = ts.flattenDiagnosticMessageText(d.messageText, " ");
      let at = "";
      if (d.file && d.start !== undefined) {
        const line = d.file.getLineAndCharacterOfPosition(d.start).line;
        const w = where.find((w) => line >= w.start && line < w.end);
        if (w) at = `${w.t.source}: ${w.t.obj.kind} ${w.t.obj.metadata?.name}: `;
      }
      problems.push(`${at}${msg}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

for (const p of problems) console.log(p);
console.log(`istio schema check: ${objects.length} objects, ${problems.length} problems`);
process.exit(problems.length ? 1 : 0);
