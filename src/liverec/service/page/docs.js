/* /docs: Swagger UI from local files when the server ships them; otherwise a plain
   list of the endpoints read from /openapi.json. Loaded as a file: the
   Content-Security-Policy allows no inline script. */
"use strict";
window.addEventListener("DOMContentLoaded", () => {
  if (window.SwaggerUIBundle) {
    window.ui = window.SwaggerUIBundle({
      url: "/openapi.json",
      dom_id: "#swagger-ui",
      deepLinking: true,
      validatorUrl: null, // the default badge is fetched from an external host
      presets: [window.SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
    });
    return;
  }
  document.getElementById("plain-docs").hidden = false;
  const list = document.getElementById("endpoints");
  fetch("/openapi.json").then((r) => r.json()).then((doc) => {
    for (const [path, ops] of Object.entries(doc.paths || {})) {
      for (const [method, op] of Object.entries(ops)) {
        const li = document.createElement("li");
        const code = document.createElement("code");
        code.textContent = `${method.toUpperCase()} ${path}`;
        li.append(code, document.createTextNode(` ${op.summary || ""}`));
        list.append(li);
      }
    }
  });
});
