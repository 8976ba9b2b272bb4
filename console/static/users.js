"use strict";
async function refresh() {
  const users = await (await fetch("/api/users", {credentials: "same-origin"})).json();
  document.getElementById("users").replaceChildren(...users.users.map((u) => {
    const tr = el("tr"); tr.dataset.login = u.login;
    const role = el("button", "role", u.role === "operator" ? "make supervisor" : "make operator");
    role.onclick = () => change(u.login, {role: u.role === "operator" ? "supervisor" : "operator"});
    const dis = el("button", "disable", u.disabled ? "enable" : "disable");
    dis.onclick = () => change(u.login, {disabled: !u.disabled});
    const td = el("td"); td.append(role, " ", dis);
    tr.append(el("td", null, u.login), el("td", null, u.role), el("td", null, u.disabled ? "disabled" : "active"), td);
    return tr;
  }));
  const audit = await (await fetch("/api/audit", {credentials: "same-origin"})).json();
  document.getElementById("audit").replaceChildren(...audit.audit.map((a) => {
    const tr = el("tr");
    tr.append(el("td", null, new Date(a.wall * 1000).toLocaleString()), el("td", null, a.login),
              el("td", null, a.action), el("td", null, a.target || ""), el("td", null, a.detail || ""));
    return tr;
  }));
}
async function change(login, body) {
  try { await post("/api/users/" + encodeURIComponent(login), body); await refresh(); }
  catch (e) { document.getElementById("u-error").textContent = e.message; }
}
document.getElementById("add-user").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const err = document.getElementById("u-error"); err.textContent = "";
  try {
    await post("/api/users", {login: document.getElementById("u-login").value,
      password: document.getElementById("u-password").value, role: document.getElementById("u-role").value});
    ev.target.reset(); await refresh();
  } catch (e) { err.textContent = e.message; }
});
refresh();
