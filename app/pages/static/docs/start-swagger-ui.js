// Starts Swagger UI on /docs. A file rather than an inline script, so the page works under a
// Content-Security-Policy without 'unsafe-inline'; the schema's address comes from a data attribute.
(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    displayRequestDuration: true,
    validatorUrl: null, // Swagger UI would otherwise ask a validator on another host
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
