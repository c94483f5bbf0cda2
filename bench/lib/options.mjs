/**
 * Extra server options from the environment, so that options wsconn does not
 * have yet can be measured without changing the benchmarks:
 *   WSCONN_OPTIONS='{"compression":{"mode":"context-takeover","maxWindowBits":10}}'
 * is merged into every wsconn serve/dial options object a compression
 * benchmark builds, WS_OPTIONS likewise into ws's WebSocketServer options.
 */

/** envOptions parses the JSON object in env[name] ({} when unset); a malformed value stops the run. */
export function envOptions(name, env = process.env) {
  const text = env[name];
  if (text === undefined || text.trim() === "") return {};
  let value;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new Error(`${name} is not valid JSON: ${err.message}`);
  }
  if (!isPlainObject(value)) throw new Error(`${name} must be a JSON object, not ${text}`);
  return value;
}

/**
 * mergeOptions returns `base` with `extra` merged in, objects merged key by
 * key and everything else replaced. One case is special: a `compression`
 * mode string in `base` meeting an object in `extra` becomes
 * `{ mode: base, ...extra }`, so `{"compression":{"maxWindowBits":10}}` keeps
 * each row's mode while `{"compression":{"mode":"…"}}` overrides it.
 */
export function mergeOptions(base, extra) {
  const out = { ...base };
  for (const [key, value] of Object.entries(extra ?? {})) {
    const have = out[key];
    if (key === "compression" && typeof have === "string" && isPlainObject(value)) out[key] = { mode: have, ...value };
    else if (isPlainObject(have) && isPlainObject(value)) out[key] = mergeOptions(have, value);
    else out[key] = value;
  }
  return out;
}

function isPlainObject(v) {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
