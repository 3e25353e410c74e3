// Runs when the server fills export_source: hands the text to the user as a download. args: source.
const text = source.data.text[0];
if (!text) { return; }
const blob = new Blob([text], {type: source.data.mime[0]});
const link = document.createElement("a");
link.href = URL.createObjectURL(blob);
link.download = source.data.filename[0];
document.body.appendChild(link);
link.click();
link.remove();
setTimeout(() => URL.revokeObjectURL(link.href), 10000);
