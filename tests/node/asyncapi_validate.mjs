// Validates the server's /asyncapi.json with the official @asyncapi/parser (schema and
// semantic rules, offline) and prints one JSON line: what the parsed document holds.
// Exits non-zero when the document cannot be fetched or has any error or warning.

import { Parser } from "@asyncapi/parser";
import { ScenarioError, env } from "./lib.mjs";

const ERROR = 0;
const WARNING = 1;

async function main() {
  const url = `${env("TABLECAST_URL")}/asyncapi.json`;
  const response = await fetch(url);
  if (!response.ok) throw new ScenarioError(`GET ${url} answered ${response.status}`);
  const text = await response.text();

  const { document, diagnostics } = await new Parser().parse(text);
  const problems = diagnostics
    .filter((d) => d.severity === ERROR || d.severity === WARNING)
    .map((d) => ({ severity: d.severity, code: d.code, message: d.message, path: d.path }));
  if (problems.length > 0 || document === undefined) {
    throw new ScenarioError(`invalid AsyncAPI document: ${JSON.stringify(problems)}`);
  }

  const operations = {};
  for (const operation of document.operations().all()) {
    const reply = operation.reply();
    operations[operation.id()] = {
      action: operation.action(),
      messages: operation.messages().all().map((m) => m.id()),
      reply: reply ? reply.messages().all().map((m) => m.id()) : [],
    };
  }
  console.log(
    JSON.stringify({
      ok: true,
      scenario: "asyncapi_validate",
      version: document.version(),
      channels: document.channels().all().map((c) => c.address()),
      operations,
      schemas: document.components().schemas().all().map((s) => s.id()),
      notes: diagnostics.filter((d) => d.severity > WARNING).map((d) => d.code),
    }),
  );
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err instanceof ScenarioError ? err.message : err);
    process.exit(1);
  },
);
