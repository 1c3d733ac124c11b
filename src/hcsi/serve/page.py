"""The single-page UI: plain HTML, CSS and JavaScript, nothing loaded from elsewhere (air-gapped machines)."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hcsi — deepfake check</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
#drop{border:2px dashed #888;border-radius:8px;padding:2.5em;text-align:center;cursor:pointer}
#drop.over{background:#eef}
#verdict{font-size:1.6em;margin:.6em 0}
.detail{font-size:.55em;color:#333;margin:.2em 0}
.banner{font-size:.55em;background:#fff3cd;border:1px solid #e0c36a;padding:.4em .6em;margin:.4em 0}
.fake{color:#b00}.real{color:#070}
#progress{width:100%;display:none}
svg{background:#fafafa;border:1px solid #ddd}
img{max-width:100%;margin-top:1em}
</style></head><body>
<h1>hcsi — is this face video real?</h1>
<div id="drop">Drop a video or image here, or <label><u>choose a file</u>
<input id="file" type="file" accept="video/*,image/*" hidden></label></div>
<p><label>Frames <input id="frames" type="number" min="1" max="300" value="32"></label></p>
<progress id="progress" max="100"></progress><div id="status"></div>
<div id="verdict"></div><div id="plot"></div><img id="heatmap" alt="" hidden>
<script>
const token = new URLSearchParams(location.search).get("token");
const $ = id => document.getElementById(id);
function headers(){ return token ? {"Authorization": "Bearer " + token} : {}; }
function plot(indices, scores){
  if(!scores.length){ $("plot").innerHTML = ""; return; }
  const w = 900, h = 160, n = scores.length;
  const x = i => 30 + (n === 1 ? (w - 40) / 2 : i * (w - 40) / (n - 1)), y = s => h - 20 - s * (h - 30);
  let pts = scores.map((s, i) => x(i) + "," + y(s)).join(" ");
  $("plot").innerHTML = `<svg id="frame-plot" width="${w}" height="${h}">
    <line x1="30" y1="${y(0.5)}" x2="${w - 10}" y2="${y(0.5)}" stroke="#aaa" stroke-dasharray="4"/>
    <polyline points="${pts}" fill="none" stroke="#c33" stroke-width="2"/>
    ${scores.map((s, i) => `<circle cx="${x(i)}" cy="${y(s)}" r="3" fill="#c33"><title>frame ${indices[i]}: ${s.toFixed(3)}</title></circle>`).join("")}
    <text x="2" y="${y(1) + 4}" font-size="10">1</text><text x="2" y="${y(0) + 4}" font-size="10">0</text>
    <text x="${w / 2 - 60}" y="${h - 4}" font-size="11">p(fake) per sampled frame</text></svg>`;
}
function show(r){
  $("progress").style.display = "none";
  if(r.score === null || r.score === undefined){
    $("verdict").className = ""; $("verdict").textContent = "No verdict: " + (r.reason || r.detail || r.status);
    plot([], []); $("heatmap").hidden = true; return;
  }
  const calibrated = r.calibration && r.calibration !== "uncalibrated";
  const verdict = calibrated ? r.verdict : r.label, op = r.operating_point;
  $("verdict").className = verdict;
  $("verdict").innerHTML = `<span id="label">${verdict.toUpperCase()}</span> — ` + (calibrated
    ? `probability <span id="probability">${r.probability.toFixed(3)}</span> <span class="detail">(raw score <span id="score">${r.score.toFixed(3)}</span>)</span>
       <div class="detail">Decided at the operating point FPR ${100 * op.target_fpr} %: on the calibration videos ${(100 * op.fpr).toFixed(1)} % of real videos and ${(100 * op.tpr).toFixed(1)} % of fakes were called fake.</div>`
    : `score <span id="score">${r.score.toFixed(3)}</span>
       <div id="uncalibrated" class="banner">uncalibrated: a raw score, not a probability; the verdict compares it with 0.5. Run <code>hcsi calibrate</code> on labelled videos like these to get probabilities and operating points.</div>`)
    + `<div class="detail">${r.frames_used} frame(s) with a face, ${r.faces_found} face(s).</div>`;
  $("status").textContent = "";
  plot(r.frame_indices, r.frame_scores);
  if(r.heatmap_url){ $("heatmap").src = r.heatmap_url + (token ? "?token=" + encodeURIComponent(token) : ""); $("heatmap").hidden = false; }
}
function send(file){
  const form = new FormData(); form.append("file", file); form.append("frames", $("frames").value);
  const xhr = new XMLHttpRequest(); xhr.open("POST", "/v1/analyze");
  for(const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
  $("progress").style.display = "block"; $("progress").value = 0; $("verdict").textContent = "";
  $("status").textContent = "uploading " + file.name + " ...";
  xhr.upload.onprogress = e => { if(e.lengthComputable){ $("progress").value = 100 * e.loaded / e.total;
    if(e.loaded === e.total) $("status").textContent = "analysing (frames, faces, model) ..."; } };
  xhr.onload = () => { let r; try { r = JSON.parse(xhr.responseText); } catch(e) { r = {detail: xhr.statusText}; }
    if(xhr.status === 503) r.detail = "server busy, try again in a moment"; show(r); };
  xhr.onerror = () => show({detail: "network error"});
  xhr.send(form);
}
$("file").onchange = e => e.target.files[0] && send(e.target.files[0]);
const drop = $("drop");
drop.ondragover = e => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = e => { e.preventDefault(); drop.classList.remove("over"); e.dataTransfer.files[0] && send(e.dataTransfer.files[0]); };
</script></body></html>
"""
