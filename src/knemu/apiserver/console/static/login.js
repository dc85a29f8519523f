// The console's sign-in: POST the token as JSON (never a form: the server only takes JSON
// from its own origin); the server answers with an HttpOnly, SameSite=Strict session cookie.
// A link of the form /console/login#token=... (what `knemu console` prints) signs in at once;
// the fragment never leaves the browser and is cleared from the address bar.
"use strict";

async function signIn(token) {
  const error = document.getElementById("error");
  error.textContent = "";
  const resp = await fetch("/console/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token }),
  });
  if (resp.ok) {
    window.location.replace("/console/");
    return;
  }
  let message = `sign-in failed (${resp.status})`;
  try {
    message = (await resp.json()).message || message;
  } catch (_) { /* not JSON */ }
  error.textContent = message;
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  signIn(document.getElementById("token").value);
});

const fromLink = new URLSearchParams(window.location.hash.slice(1)).get("token");
if (fromLink) {
  history.replaceState(null, "", window.location.pathname);
  signIn(fromLink);
}
