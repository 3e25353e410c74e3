// Runs once the page is ready: reports the browser's WebGL renderer to the server. args: probe (TextInput).
let renderer = "none";
try {
    const gl = document.createElement("canvas").getContext("webgl");
    if (gl != null) {
        const info = gl.getExtension("WEBGL_debug_renderer_info");
        renderer = String(gl.getParameter(info != null ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
    }
} catch (error) { renderer = "none"; }
probe.value = renderer;
