// The web UI's 360° viewer (docs/ui.md): shows an equirectangular image in Pannellum, the vendored viewer library
// (static/pannellum). A full sphere is 2:1 (180° tall); a 360° band (--tile x) is 360 · H / W degrees tall, and the
// viewer keeps the view inside it. No WebGL of our own: Pannellum draws.
window.mdSphere = {
  viewers: {},
  // Show the image at `url` in the element `elementId`, replacing what it showed; resolves to the viewer when loaded.
  show(elementId, url) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.onerror = () => reject(new Error("the image could not be read"));
      img.onload = () => {
        const vaov = Math.min(180, (360 * img.naturalHeight) / img.naturalWidth);
        const old = this.viewers[elementId];
        if (old) old.destroy();
        const viewer = pannellum.viewer(elementId, {
          type: "equirectangular",
          panorama: url,
          autoLoad: true,
          haov: 360,
          vaov: vaov,
          vOffset: 0,
          hfov: Math.min(100, vaov * 1.5),
          showControls: true,
        });
        this.viewers[elementId] = viewer;
        viewer.on("load", () => resolve(viewer));
        viewer.on("error", (message) => reject(new Error(message)));
      };
      img.src = url;
    });
  },
};
