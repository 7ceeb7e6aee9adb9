// Connects to the notifier as one rider, shows each payment and its status as it changes,
// and reconnects with the last message id it saw so nothing is missed or shown twice.
"use strict";

const payments = document.getElementById("payments");
const connection = document.getElementById("connection");
const empty = document.getElementById("empty");
let socket = null;
let lastId = null;
let retryDelayMs = 500;
let userId = null;

async function notifierUrl() {
  const response = await fetch("/config.json");
  return (await response.json()).notifierUrl;
}

function setConnection(text, open) {
  connection.textContent = text;
  connection.classList.toggle("open", open);
}

function rowFor(rideId) {
  let row = payments.querySelector(`li[data-ride-id="${CSS.escape(rideId)}"]`);
  if (!row) {
    row = document.createElement("li");
    row.dataset.rideId = rideId;
    row.innerHTML = '<span class="ride"></span><a class="pay-link" target="_blank">Pay</a><span class="status"></span>';
    row.querySelector(".ride").textContent = rideId;
    payments.prepend(row);
    empty.hidden = true;
  }
  return row;
}

function setStatus(row, status) {
  const badge = row.querySelector(".status");
  badge.textContent = status;
  badge.className = `status ${status}`;
  row.querySelector(".pay-link").hidden = !["pending", "failed"].includes(status);
  offerNewLink(row, status);
}

function show(message) {
  if (message.id) lastId = message.id;
  if (message.type === "payment_url") {
    const row = rowFor(message.rideId);
    row.querySelector(".pay-link").href = message.paymentUrl;
    showAttempt(row, message);
    if (!row.querySelector(".status").textContent) setStatus(row, message.status);
  } else if (message.type === "payment_status_update") {
    setStatus(rowFor(message.rideId), message.status);
  } else if (message.type === "registration_success") {
    setConnection(`connected as ${message.userId}`, true);
  } else if (message.type === "error") {
    setConnection(`error: ${message.message}`, false);
  }
}

async function connect() {
  const url = new URL(await notifierUrl());
  url.searchParams.set("userId", userId);
  if (lastId) url.searchParams.set("lastId", lastId);
  socket = new WebSocket(url);
  socket.onopen = () => { retryDelayMs = 500; };
  socket.onmessage = (frame) => show(JSON.parse(frame.data));
  socket.onclose = () => {
    setConnection(`disconnected; reconnecting in ${Math.round(retryDelayMs / 1000)} s`, false);
    setTimeout(connect, retryDelayMs);
    retryDelayMs = Math.min(retryDelayMs * 2, 10000);
  };
}

document.getElementById("register").addEventListener("submit", (event) => {
  event.preventDefault();
  const chosen = document.getElementById("user-id").value.trim();
  if (!chosen || chosen === userId) return;
  userId = chosen;
  lastId = null;
  payments.replaceChildren();
  empty.hidden = false;
  if (socket) { socket.onclose = null; socket.close(); }
  setConnection("connecting…", false);
  connect();
});

// --- A ride that can no longer be paid: its amount and a "Get a new link" button. ---
// The page's server asks the payments API for the next attempt; the new link then arrives
// over the socket like any other `payment_url`.

function showAttempt(row, message) {
  // A link for a newer attempt makes an expired or canceled ride payable again.
  const attempt = message.attempt || 1;
  if (attempt > Number(row.dataset.attempt || 1)) setStatus(row, message.status);
  row.dataset.attempt = attempt;
  showAmount(row, message);
}

function showAmount(row, message) {
  if (message.amount == null || !message.currency) return;
  let amount = row.querySelector(".amount");
  if (!amount) {
    amount = document.createElement("span");
    amount.className = "amount";
    row.querySelector(".ride").after(amount);
  }
  const digits = message.currency.toLowerCase() === "jpy" ? 0 : 2;
  amount.textContent = `${(message.amount / 10 ** digits).toFixed(digits)} ${message.currency.toUpperCase()}`;
}

function offerNewLink(row, status) {
  let button = row.querySelector(".new-link");
  if (!button) {
    button = document.createElement("button");
    button.className = "new-link";
    button.type = "button";
    button.textContent = "Get a new link";
    button.addEventListener("click", () => askForNewLink(row, button));
    row.querySelector(".status").before(button);
  }
  button.hidden = !["expired", "canceled"].includes(status);
  button.disabled = false;
}

async function askForNewLink(row, button) {
  button.disabled = true;
  const response = await fetch(`/rides/${encodeURIComponent(row.dataset.rideId)}/checkout`, { method: "POST" });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    setConnection(`new link refused: ${body.error || response.status}`, socket !== null);
    button.disabled = false;
  }
}
