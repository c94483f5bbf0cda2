/**
 * JSON-like text for the compression benchmarks: what a WebSocket API sends
 * (events with the same keys, different ids and numbers), so that deflate
 * finds the redundancy of real traffic and not that of a repeated byte.
 */

const COLORS = ["red", "green", "blue", "black", "white", "amber"];
const CITIES = ["Lyon", "Oslo", "Quito", "Pune", "Perth", "Accra", "Osaka"];
const STATUS = ["pending", "packed", "shipped", "delivered", "returned"];
const FILLER = "Please leave the parcel at the front desk if nobody answers the door; call ahead. ";

/**
 * jsonText returns valid JSON of exactly `size` characters (ASCII, so as many
 * bytes; at least ~300), its ids and numbers derived from `seed`: an order
 * event with as many line items as fit, padded to the size with a note.
 */
export function jsonText(size, seed) {
  const msg = {
    type: "order.updated",
    id: seed,
    user: { id: `user-${seed}`, name: `Customer ${(seed * 2654435761) % 1_000_000}`, tier: ["free", "pro", "team"][seed % 3] },
    ts: 1_700_000_000_000 + seed * 1013,
    shipping: { method: seed % 2 ? "express" : "standard", city: CITIES[seed % CITIES.length], zip: String(10_000 + ((seed * 97) % 89_999)) },
    items: [],
    note: "",
  };
  let length = JSON.stringify(msg).length;
  for (let k = 0; ; k++) {
    const item = {
      sku: `SKU-${(seed * 7 + k * 131) % 100_000}`,
      qty: ((seed + k) % 9) + 1,
      price: ((seed * 31 + k * 17) % 100_000) / 100,
      color: COLORS[(seed + k) % COLORS.length],
      status: STATUS[(seed * 3 + k) % STATUS.length],
    };
    const more = JSON.stringify(item).length + (k > 0 ? 1 : 0);
    if (length + more > size - 40) break;
    msg.items.push(item);
    length += more;
  }
  msg.note = FILLER.repeat(Math.ceil(size / FILLER.length)).slice(0, Math.max(0, size - length));
  const text = JSON.stringify(msg);
  if (text.length !== size) throw new Error(`jsonText: ${text.length} characters instead of ${size}`);
  return text;
}
