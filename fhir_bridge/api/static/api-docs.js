// Starts Swagger UI on the bridge's own OpenAPI document (a file, not an inline script, so the
// page's Content-Security-Policy can forbid inline scripts), and names the one control Swagger
// UI leaves unnamed (the servers list) once it is drawn.
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.spec,
    dom_id: "#swagger-ui",
    deepLinking: false, // its links inside each operation's toggle button nest two controls
    persistAuthorization: false,
  });
  new MutationObserver(function () {
    var servers = document.getElementById("servers");
    if (servers && !servers.getAttribute("aria-label")) {
      servers.setAttribute("aria-label", "Server");
    }
  }).observe(root, { childList: true, subtree: true });
});
