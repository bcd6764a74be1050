// The chat page: @anycable/web over the extended protocol, so that a network loss ends in a
// session restore that replays the missed messages from pycable's stream history.
import { createCable } from "@anycable/web";

const root = document.getElementById("chat");
const stateEl = document.getElementById("state");
const list = document.getElementById("messages");
const errorEl = document.getElementById("error");
const form = document.getElementById("speak");
const presentEl = document.getElementById("present");

// The URL comes from <meta name="action-cable-url">; the session cookie authenticates.
const cable = createCable({ protocol: "actioncable-v1-ext-json" });

function showState(state, note) {
  stateEl.dataset.state = state;
  stateEl.textContent = note ? `${state} (${note})` : state;
}

// Observable by tests and curious users: every connect with whether it restored the session.
window.chatEvents = [];
cable.on("connect", (ev) => {
  window.chatEvents.push({ event: "connect", restored: !!ev.restored, reconnect: !!ev.reconnect });
  showState("connected", ev.restored ? "session restored" : ev.reconnect ? "reconnected" : "");
});
cable.on("disconnect", (ev) => {
  window.chatEvents.push({ event: "disconnect", reason: ev && ev.reason ? ev.reason : null });
  showState("disconnected", ev && ev.reason ? ev.reason : "");
});
cable.on("close", () => showState("closed"));
showState(cable.state);

const channel = cable.subscribeTo("ChatChannel", { room: root.dataset.room });
channel.on("message", (msg) => {
  if (msg.error) {
    errorEl.textContent = msg.error;
    return;
  }
  const li = document.createElement("li");
  const user = document.createElement("span");
  user.className = "user";
  user.textContent = msg.user;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = msg.text;
  li.append(user, text);
  list.append(li);
});
// Who is in the room: the presence set the app joins us to, kept current by join/leave events.
let present = {};
function showPresent() {
  const names = Object.values(present).map((info) => (info && info.name) || "?").sort();
  presentEl.textContent = names.join(", ");
  presentEl.dataset.names = JSON.stringify(names);
}
channel.on("presence", (ev) => {
  if (ev.type === "join") present[ev.id] = ev.info;
  else if (ev.type === "leave") delete present[ev.id];
  else return;
  showPresent();
});
channel.on("connect", () => {
  root.dataset.subscribed = "true";
  channel.presence.reset();
  channel.presence.info().then(
    (state) => {
      present = { ...state };
      showPresent();
    },
    () => {},
  );
});
channel.on("disconnect", () => (root.dataset.subscribed = "false"));
channel.on("error", () => showState(cable.state, "subscription rejected"));

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = form.elements.text;
  errorEl.textContent = "";
  try {
    await channel.perform("speak", { text: input.value });
    input.value = "";
  } catch (err) {
    errorEl.textContent = `not sent: ${err.message || err}`;
  }
});
