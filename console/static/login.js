"use strict";
document.getElementById("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const err = document.getElementById("login-error");
  err.textContent = "";
  try {
    await post("/login", {login: document.getElementById("login").value,
                          password: document.getElementById("password").value});
    location.href = "/";
  } catch (e) { err.textContent = e.message; }
});
