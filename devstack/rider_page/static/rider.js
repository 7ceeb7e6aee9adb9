// The rider page: one rider's payments, live from the notifier.
//
// Written to be copied. What it does that a client of the notifier should do:
// - reconnects after any transient failure, forever: a dropped socket, a notifier restart, and
//   the page's own server being down (the config fetch fails before any socket exists);
// - waits between attempts with capped exponential backoff and jitter, so that a thousand
//   pages do not reconnect in the same instant after a restart;
// - resumes with the last message id it saw (`lastId`), so nothing is missed or shown twice;
// - stops on a permanent refusal (close 1008: a bad or expired token, too many sockets) and
//   says why, instead of retrying for ever;
// - shows `error` and `info` messages from the server;
// - never trusts a frame: JSON is parsed defensively and anything unexpected is ignored;
// - holds one socket at a time: switching user closes the old one before opening the next.
"use strict";

const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 15000;
// Close codes after which the same request would be refused again (see the README's table).
const PERMANENT_CLOSE_CODES = new Map([
  [1008, "refused by the notifier"],
  [1009, "a message was too big"],
]);
const STATUSES_TO_PAY = new Set(["pending", "failed"]);
// A ride in one of these may no longer be payable with its link: a new attempt can be asked
// for. For `failed` the payments API answers with the same link while it can still be paid (a
// declined card), and with a new attempt once it cannot (a bank debit that failed).
const STATUSES_TO_RENEW = new Set(["expired", "canceled", "failed"]);
// What the rider reads for a status, where the status's own name says too little.
const STATUS_TEXT = new Map([["processing", "payment on its way"]]);

const elements = {
  form: document.getElementById("register"),
  userId: document.getElementById("user-id"),
  token: document.getElementById("token"),
  connection: document.getElementById("connection"),
  notice: document.getElementById("notice"),
  result: document.getElementById("result"),
  payments: document.getElementById("payments"),
  empty: document.getElementById("empty"),
};

// Everything about the current rider's connection. `generation` grows with each socket or
// switch of user, so that callbacks of an old socket or timer know they are stale.
const connection = {
  userId: null,
  token: null,
  socket: null,
  lastId: null,
  failures: 0,
  retryTimer: null,
  generation: 0,
  lastError: null,
};

// rideId -> what the page knows about that ride's payment.
const rides = new Map();

// ---- what the rider sees -------------------------------------------------------------------

function showConnection(text, state) {
  elements.connection.textContent = text;
  elements.connection.className = `state ${state}`;
}

function showNotice(kind, text) {
  elements.notice.textContent = text;
  elements.notice.className = `notice ${kind}`;
  elements.notice.hidden = !text;
}

// The actions a rider can take on one ride. Each gets the ride's state ({rideId, status,
// paymentUrl, amount, currency, attempt}) and returns an element or null; add a function here
// to offer another action.
const RIDE_ACTIONS = [payLinkAction, newLinkAction];

function payLinkAction(ride) {
  if (!ride.paymentUrl || !STATUSES_TO_PAY.has(ride.status)) return null;
  const link = document.createElement("a");
  link.className = "pay-link";
  link.href = ride.paymentUrl;
  link.textContent = "Pay";
  link.target = "_blank";
  link.rel = "noopener";
  return link;
}

// The page's server asks the payments API for the ride's next attempt; its link then arrives
// over the socket like any other `payment_url`.
function newLinkAction(ride) {
  if (!STATUSES_TO_RENEW.has(ride.status)) return null;
  const button = document.createElement("button");
  button.className = "new-link";
  button.type = "button";
  button.textContent = "Get a new link";
  button.addEventListener("click", () => askForNewLink(ride.rideId, button));
  return button;
}

async function askForNewLink(rideId, button) {
  button.disabled = true;
  try {
    const response = await fetch(`/rides/${encodeURIComponent(rideId)}/checkout`, { method: "POST" });
    if (response.ok) return;
    const body = await response.json().catch(() => ({}));
    showNotice("error", `no new link for ${rideId}: ${body.error || `HTTP ${response.status}`}`);
  } catch (error) {
    showNotice("error", `no new link for ${rideId}: ${error}`);
  }
  button.disabled = false;
}

function renderActions(row, ride) {
  const actions = row.querySelector(".actions");
  actions.replaceChildren();
  for (const action of RIDE_ACTIONS) {
    try {
      const element = action(ride);
      if (element) actions.append(element);
    } catch (error) {
      console.error("a ride action failed to render", error);
    }
  }
}

function rowFor(rideId) {
  let row = elements.payments.querySelector(`li[data-ride-id="${CSS.escape(rideId)}"]`);
  if (!row) {
    row = document.createElement("li");
    row.dataset.rideId = rideId;
    row.innerHTML =
      '<span class="ride"></span><span class="amount"></span>' +
      '<span class="actions"></span><span class="status"></span>';
    row.querySelector(".ride").textContent = rideId;
    elements.payments.prepend(row);
    elements.empty.hidden = true;
  }
  return row;
}

function renderRide(rideId) {
  const ride = rides.get(rideId);
  const row = rowFor(rideId);
  const badge = row.querySelector(".status");
  badge.textContent = STATUS_TEXT.get(ride.status) || ride.status;
  badge.className = `status ${ride.status}`;
  row.querySelector(".amount").textContent = formatAmount(ride.amount, ride.currency);
  renderActions(row, ride);
}

function formatAmount(amount, currency) {
  if (!Number.isInteger(amount) || typeof currency !== "string") return "";
  try {
    const format = new Intl.NumberFormat(undefined, { style: "currency", currency });
    const digits = format.resolvedOptions().maximumFractionDigits;
    return format.format(amount / 10 ** digits);
  } catch {
    return `${amount} ${currency}`;
  }
}

function clearRides() {
  rides.clear();
  elements.payments.replaceChildren();
  elements.empty.hidden = false;
}

// ---- messages from the notifier ------------------------------------------------------------

function parseFrame(data) {
  if (typeof data !== "string") return null;
  try {
    const message = JSON.parse(data);
    return message !== null && typeof message === "object" && typeof message.type === "string"
      ? message
      : null;
  } catch {
    return null;
  }
}

function isText(value) {
  return typeof value === "string" && value.length > 0;
}

function updateRide(message, fields) {
  if (!isText(message.rideId)) return;
  const ride = { ...(rides.get(message.rideId) || {}), ...fields, rideId: message.rideId };
  if (!isText(ride.status)) return;
  rides.set(message.rideId, ride);
  renderRide(message.rideId);
}

const HANDLERS = {
  registration_success(message) {
    connection.failures = 0;
    connection.lastError = null;
    showConnection(`connected as ${message.userId}`, "open");
  },
  payment_url(message) {
    // A link comes with `pending`; a repeated link of the same attempt keeps a later status.
    const known = rides.get(message.rideId);
    const sameAttempt = known !== undefined && known.attempt === message.attempt;
    updateRide(message, {
      status: sameAttempt ? known.status : message.status,
      paymentUrl: isText(message.paymentUrl) ? message.paymentUrl : null,
      amount: message.amount,
      currency: message.currency,
      attempt: message.attempt,
    });
  },
  payment_status_update(message) {
    const fields = { status: message.status };
    if (message.amount !== undefined) fields.amount = message.amount;
    if (message.currency !== undefined) fields.currency = message.currency;
    updateRide(message, fields);
  },
  info(message) {
    showNotice("info", String(message.message ?? ""));
  },
  error(message) {
    connection.lastError = String(message.message ?? "unknown error");
    showNotice("error", `notifier: ${connection.lastError}`);
  },
};

function receive(message) {
  if (isText(message.id)) connection.lastId = message.id;
  const handle = HANDLERS[message.type];
  if (handle) handle(message);
}

// ---- the connection ------------------------------------------------------------------------

async function notifierUrl() {
  const response = await fetch("/config.json", { cache: "no-store" });
  if (!response.ok) throw new Error(`config.json: HTTP ${response.status}`);
  const config = await response.json();
  if (!isText(config.notifierUrl)) throw new Error("config.json has no notifierUrl");
  return config.notifierUrl;
}

function socketUrl(base) {
  const url = new URL(base, window.location.href);
  url.searchParams.set("userId", connection.userId);
  if (connection.token) url.searchParams.set("token", connection.token);
  if (connection.lastId) url.searchParams.set("lastId", connection.lastId);
  return url;
}

async function connect(generation) {
  connection.retryTimer = null;
  showConnection("connecting…", "connecting");
  let base;
  try {
    base = await notifierUrl();
  } catch (error) {
    if (generation === connection.generation) scheduleReconnect(`page server: ${error.message}`);
    return;
  }
  if (generation !== connection.generation) return; // the rider switched user meanwhile
  let socket;
  try {
    socket = new WebSocket(socketUrl(base));
  } catch (error) {
    scheduleReconnect(`notifier URL ${base}: ${error.message}`); // the config may be fixed
    return;
  }
  connection.socket = socket;
  socket.onmessage = (frame) => {
    if (generation !== connection.generation) return;
    const message = parseFrame(frame.data);
    if (message) receive(message);
    else console.warn("ignored a frame that is not a JSON message", frame.data);
  };
  socket.onclose = (event) => {
    if (generation !== connection.generation) return;
    connection.socket = null;
    const permanent = PERMANENT_CLOSE_CODES.get(event.code);
    if (permanent) {
      const why = connection.lastError || event.reason || permanent;
      showConnection(`not reconnecting: ${why} (close ${event.code})`, "stopped");
      return;
    }
    scheduleReconnect(`connection closed (${event.code})`);
  };
}

function retryDelayMs(failures) {
  const ceiling = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** failures);
  return ceiling / 2 + Math.random() * (ceiling / 2); // "equal jitter"
}

function scheduleReconnect(reason) {
  const delay = retryDelayMs(connection.failures);
  connection.failures += 1;
  showConnection(`${reason}; reconnecting in ${(delay / 1000).toFixed(1)} s`, "retrying");
  const generation = connection.generation;
  connection.retryTimer = setTimeout(() => connect(generation), delay);
}

function disconnect() {
  connection.generation += 1;
  clearTimeout(connection.retryTimer);
  connection.retryTimer = null;
  if (connection.socket) connection.socket.close(1000, "switching user");
  connection.socket = null;
}

function connectAs(userId, token) {
  disconnect();
  Object.assign(connection, { userId, token, lastId: null, failures: 0, lastError: null });
  clearRides();
  showNotice("", "");
  try {
    localStorage.setItem("rider.userId", userId);
  } catch {
    // Storage may be disabled; the page still works, it just won't remember the rider.
  }
  connect(connection.generation);
}

// ---- coming back from Checkout -------------------------------------------------------------

const RESULTS = {
  success: "Payment submitted. The status below turns to succeeded once Stripe confirms it.",
  cancel: "You left Checkout without paying. The Pay link stays valid until it expires.",
};

function showCheckoutResult() {
  const params = new URLSearchParams(window.location.search);
  const text = RESULTS[params.get("result")];
  if (!text) return;
  elements.result.textContent = text;
  elements.result.className = `result ${params.get("result")}`;
  elements.result.hidden = false;
}

// ---- start ---------------------------------------------------------------------------------

elements.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const userId = elements.userId.value.trim();
  const token = elements.token.value.trim() || null;
  if (!userId) return;
  if (userId === connection.userId && token === connection.token && connection.socket) return;
  connectAs(userId, token);
});

showCheckoutResult();
try {
  const remembered = localStorage.getItem("rider.userId");
  if (remembered) {
    elements.userId.value = remembered;
    connectAs(remembered, null);
  }
} catch {
  // No storage: the rider types their id.
}
