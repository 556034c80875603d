// A minimal front-end for tasklet: lists tasks, adds new ones and ticks them off.
// Plain ES modules, no build step; served next to index.html by the tasklet-web add-on.

const API = "/api";
const state = { tasks: [], query: "", busy: false };

const $ = (selector) => document.querySelector(selector);

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (char) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[char]);
}

function formatDuration(minutes) {
  if (!minutes) return "";
  const hours = Math.floor(minutes / 60);
  const rest = minutes % 60;
  if (hours === 0) return `${rest}m`;
  return rest === 0 ? `${hours}h` : `${hours}h${rest}m`;
}

function dueLabel(task, today) {
  if (!task.due) return "";
  const days = Math.round((Date.parse(task.due) - Date.parse(today)) / 86_400_000);
  if (days < 0) return `<span class="overdue">${-days}d overdue</span>`;
  if (days === 0) return "today";
  if (days === 1) return "tomorrow";
  return days < 7 ? `in ${days} days` : task.due;
}

async function api(method, path, body) {
  const response = await fetch(API + path, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!response.ok) {
    throw new Error((await response.text()) || response.statusText);
  }
  return response.status === 204 ? null : response.json();
}

function render() {
  const today = new Date().toISOString().slice(0, 10);
  const list = $("#tasks");
  if (state.tasks.length === 0) {
    list.innerHTML = '<li class="empty">Nothing to do 🎉</li>';
    return;
  }
  list.innerHTML = state.tasks
    .map(
      (task) => `
      <li class="task priority-${task.priority} status-${task.status}" data-id="${task.id}">
        <input type="checkbox" ${task.status === "done" ? "checked disabled" : ""} aria-label="done">
        <span class="title">${escapeHtml(task.title)}</span>
        <span class="tags">${task.tags.map((tag) => `#${escapeHtml(tag)}`).join(" ")}</span>
        <span class="due">${dueLabel(task, today)}</span>
        <span class="estimate">${formatDuration(task.estimate_minutes)}</span>
      </li>`,
    )
    .join("");
}

function showError(error) {
  const banner = $("#error");
  banner.textContent = error.message;
  banner.hidden = false;
  setTimeout(() => (banner.hidden = true), 5000);
}

async function refresh() {
  const params = state.query ? `?q=${encodeURIComponent(state.query)}` : "";
  state.tasks = await api("GET", `/tasks${params}`);
  render();
}

async function withBusy(action) {
  if (state.busy) return;
  state.busy = true;
  document.body.classList.add("busy");
  try {
    await action();
  } catch (error) {
    showError(error);
  } finally {
    state.busy = false;
    document.body.classList.remove("busy");
  }
}

function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

function bindEvents() {
  $("#new-task").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("#new-title");
    const title = input.value.trim();
    if (!title) return;
    withBusy(async () => {
      await api("POST", "/tasks", { title });
      input.value = "";
      await refresh();
    });
  });

  $("#tasks").addEventListener("change", (event) => {
    const item = event.target.closest("li[data-id]");
    if (!item || event.target.type !== "checkbox") return;
    withBusy(async () => {
      await api("POST", `/tasks/${item.dataset.id}/done`);
      await refresh();
    });
  });

  $("#query").addEventListener(
    "input",
    debounce((event) => {
      state.query = event.target.value.trim();
      withBusy(refresh);
    }, 250),
  );
}

document.addEventListener("DOMContentLoaded", () => {
  bindEvents();
  withBusy(refresh);
});
