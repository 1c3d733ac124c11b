"""The single-page UI: plain HTML, CSS and JavaScript, nothing loaded from elsewhere (air-gapped machines)."""
import json

from ..detect.report import PERSON_COLOURS

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hcsi — deepfake check</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<style>
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
#drop{border:2px dashed #888;border-radius:8px;padding:2.5em;text-align:center;cursor:pointer}
#drop.over{background:#eef}
#verdict{font-size:1.6em;margin:.6em 0}
.detail{font-size:.55em;color:#333;margin:.2em 0}
.banner{font-size:.55em;background:#fff3cd;border:1px solid #e0c36a;padding:.4em .6em;margin:.4em 0}
.fake,.manipulated{color:#b00}.real,.no_evidence{color:#070}.inconclusive,.cannot_judge{color:#a60}
#progress{width:100%;display:none}
svg{background:#fafafa;border:1px solid #ddd}
img{max-width:100%;margin-top:1em}
#history{border-collapse:collapse;width:100%;font-size:.9em}
#history th,#history td{text-align:left;padding:.25em .5em;border-bottom:1px solid #eee}
#history tbody tr{cursor:pointer}#history tbody tr:hover{background:#f3f3ff}
#history td.file{max-width:22em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;direction:rtl;text-align:left}
#labelbar{margin:.6em 0}.small{font-size:.85em;color:#444}
#persons{margin:.5em 0}.person{display:flex;align-items:center;gap:.8em;padding:.3em 0;border-bottom:1px solid #eee}
.person img{width:56px;height:56px;margin:0;border-radius:4px}.person .id{font-weight:bold;min-width:2.5em}
#provenance{border:1px solid #ccc;border-radius:6px;padding:.4em .8em;margin:.6em 0;font-size:.9em}
#provenance:empty{display:none}#provenance ul{margin:.2em 0;padding-left:1.4em}
.p-invalid,.p-error{color:#b00}.p-valid,.p-trusted{color:#070}.p-none{color:#555}.ai{color:#b00;font-weight:bold}
</style></head><body>
<h1>hcsi — is this face video real?</h1>
<div id="drop">Drop a video or image here, or <label><u>choose a file</u>
<input id="file" type="file" accept="video/*,image/*" hidden></label></div>
<p><label>Frames <input id="frames" type="number" min="1" max="300" placeholder="server default" style="width:9em"></label></p>
<progress id="progress" max="100"></progress><div id="status"></div>
<div id="verdict"></div><div id="provenance"></div><div id="plot"></div><div id="persons"></div><p id="report"></p><div id="labelbar" hidden>Your judgement:
<button data-label="fake">fake</button> <button data-label="real">real</button> <button data-label="unsure">unsure</button>
<input id="label-note" placeholder="note" maxlength="2000"> <input id="label-by" placeholder="your name" maxlength="200" style="width:8em">
<span id="label-state"></span></div><img id="heatmap" alt="" hidden>
<h2>History</h2>
<p id="label-summary" class="small"></p>
<p><select id="filter-status"><option value="">any status</option><option>queued</option><option>running</option>
<option>done</option><option>failed</option></select>
<select id="filter-verdict"><option value="">any verdict</option><option>manipulated</option><option>inconclusive</option>
<option>no_evidence</option><option>cannot_judge</option><option value="fake">fake (uncalibrated)</option><option value="real">real (uncalibrated)</option></select>
<select id="filter-label"><option value="">any label</option><option>fake</option><option>real</option>
<option>unsure</option><option>unlabelled</option></select>
<select id="filter-provenance"><option value="">any provenance</option><option>trusted</option><option>valid</option>
<option>invalid</option><option>none</option><option>error</option></select>
<input id="search" type="search" placeholder="file name or SHA-256"> <button id="refresh">search</button>
<a id="export" href="#">export CSV</a></p>
<table id="history"><thead><tr><th>time</th><th>file</th><th>status</th><th>verdict</th><th>score</th><th>label</th>
<th>C2PA</th><th>model</th></tr></thead><tbody></tbody></table><p id="paging"></p>
<script>
const token = new URLSearchParams(location.search).get("token");
const $ = id => document.getElementById(id);
function headers(){ return token ? {"Authorization": "Bearer " + token} : {}; }
const COLOURS = __PERSON_COLOURS__;
const colour = id => COLOURS[(id - 1) % COLOURS.length];
function plot(indices, scores, decided, persons){
  if(scores.length < 2){ $("plot").innerHTML = ""; return; }  // a still image: one score, no curve
  const w = 900, h = 160, n = scores.length;
  const x = i => 30 + (n === 1 ? (w - 40) / 2 : i * (w - 40) / (n - 1)), y = s => h - 20 - s * (h - 30);
  let pts = scores.map((s, i) => x(i) + "," + y(s)).join(" ");
  const scored = (persons || []).filter(p => p.score !== null);
  const several = scored.length > 1, at = new Map(indices.map((f, i) => [f, i]));
  const personLines = several ? scored.map(p => {
    const points = p.frames.map((f, k) => [f, p.face_scores[k]]).filter(([f, s]) => s !== null && at.has(f));
    return `<polyline class="person-line" data-person="${p.id}" points="${points.map(([f, s]) => x(at.get(f)) + "," + y(s)).join(" ")}" fill="none" stroke="${colour(p.id)}" stroke-width="2"><title>person ${p.id}</title></polyline>`;
  }).join("") : "";
  const lines = decided && decided.kind === "operating_points"
    ? [[decided.strict.threshold, `strict operating point (FPR ${decided.strict.target_fpr}): manipulated above`],
       [decided.lenient.threshold, `lenient operating point (FPR ${decided.lenient.target_fpr}): no evidence below`]]
    : [[decided ? decided.threshold : 0.5, `threshold ${decided ? decided.threshold : 0.5}: the label is fake at or above`]];
  $("plot").innerHTML = `<svg id="frame-plot" width="${w}" height="${h}">
    ${lines.map(([t, text], k) => `<line class="decided" x1="30" y1="${y(t)}" x2="${w - 10}" y2="${y(t)}" stroke="#888" stroke-dasharray="4"/>
      <text x="${k ? 34 : w - 12}" y="${k ? y(t) + 11 : y(t) - 3}" font-size="10" text-anchor="${k ? "start" : "end"}" fill="#555">${esc(text)} (video score)</text>`).join("")}
    <polyline points="${pts}" fill="none" stroke="${several ? "#999" : "#c33"}" stroke-width="${several ? 1 : 2}" stroke-dasharray="${several ? "2" : ""}"/>
    ${personLines}
    ${scores.map((s, i) => `<circle cx="${x(i)}" cy="${y(s)}" r="3" fill="${several ? "#999" : "#c33"}"><title>frame ${indices[i]}: ${s.toFixed(3)}</title></circle>`).join("")}
    <text x="2" y="${y(1) + 4}" font-size="10">1</text><text x="2" y="${y(0) + 4}" font-size="10">0</text>
    <text x="${w / 2 - 90}" y="${h - 4}" font-size="11">score per sampled frame (highest face${several ? "; one coloured line per person" : ""})</text></svg>`;
}
function seen(p){
  const ranges = p.time_ranges.map(([a, b]) => a === b ? `${a.toFixed(2)} s` : `${a.toFixed(2)}–${b.toFixed(2)} s`).join(", ");
  return `${p.frames.length} frame(s): ${ranges}`;
}
function outcome(p){
  if(p.cannot_judge.length) return "cannot judge: " + p.cannot_judge.map(c => c.message).join("; ");
  let text = p.score === null ? "no score" : `score ${p.score.toFixed(3)}`;
  if(p.probability !== null) text += `, probability ${p.probability.toFixed(3)}`;
  return text + (p.verdict ? ` — ${p.verdict.replace("_", " ")}` : "");
}
function showPersons(r){
  const persons = r.persons || [];
  $("persons").innerHTML = persons.length ? `<div class="small">${persons.length} person(s); the video's score is ${esc(r.aggregate_meaning || "")}.</div>` + persons.map(p =>
    `<div class="person ${esc(p.verdict || "")}" data-person="${p.id}">${String(p.thumbnail || "").startsWith("data:") ? `<img alt="person ${p.id}" src="${p.thumbnail}">` : ""}
     <span class="id" style="color:${colour(p.id)}">P${p.id}</span><span class="small">${esc(seen(p))}</span><span class="outcome">${esc(outcome(p))}</span></div>`).join("") : "";
}
function showProvenance(p){
  if(!p){ $("provenance").innerHTML = ""; return; }
  const signer = p.signer ? [p.signer.common_name, p.signer.issuer].filter(Boolean).join(", ") : "";
  const facts = [signer && `signed by <b>${esc(signer)}</b>`, p.claim_generator && `with ${esc(p.claim_generator)}`,
                 p.time && `at ${esc(p.time)}`].filter(Boolean).join(" ");
  const actions = (p.actions || []).map(a => `<li>${esc(a.action || "?")}${a.software_agent ? ` (${esc(a.software_agent)})` : ""}`
    + (a.ai_generated ? ` <span class="ai">made by an AI model</span>` : "") + `</li>`).join("");
  const ingredients = (p.ingredients || []).map(i => `<li>${esc(i.title || "untitled")} (${esc(i.relationship || "ingredient")}): `
    + `<span class="p-${esc(i.state)}">${esc(i.state)}</span></li>`).join("");
  const codes = (p.failure_codes || []).filter(c => c !== "signingCredential.untrusted");
  $("provenance").innerHTML = `<b>Content Credentials (C2PA):</b> <span id="provenance-state" class="p-${esc(p.state)}">${esc(p.state.toUpperCase())}</span>`
    + (p.ai_generated ? ` — <span class="ai" id="provenance-ai">says it was made with an AI model</span>` : "")
    + (facts ? `<div>${facts}</div>` : "")
    + `<div class="small">${esc(p.meaning)}${p.reason ? ": " + esc(p.reason) : ""}</div>`
    + (codes.length ? `<div class="small">failure codes: ${codes.map(esc).join(", ")}</div>` : "")
    + (actions ? `<div>actions:<ul>${actions}</ul></div>` : "")
    + (ingredients ? `<div>made from (edit history):<ul>${ingredients}</ul></div>` : "")
    + `<div class="small">Shown beside the verdict; it does not change it.</div>`;
}
function show(r){
  $("progress").style.display = "none";
  showProvenance(r.provenance);
  if(r.verdict === "cannot_judge"){
    $("verdict").className = "cannot_judge";
    $("verdict").innerHTML = `<span id="label">CANNOT JUDGE</span>` + (r.score === null || r.score === undefined ? "" : ` <span class="detail">(score <span id="score">${r.score.toFixed(3)}</span>)</span>`)
      + `<ul id="cannot-judge" class="detail">${r.cannot_judge.map(c => `<li><b>${esc(c.code)}</b>: ${esc(c.message)}</li>`).join("")}</ul>`;
    plot([], []); $("heatmap").hidden = true; showPersons(r);
    $("report").innerHTML = r.report_url ? `<a id="report-link" href="${withToken(r.report_url)}" target="_blank">case report (HTML)</a>` : "";
    return;
  }
  if(r.score === null || r.score === undefined){
    $("verdict").className = ""; $("verdict").textContent = "No verdict: " + (r.reason || r.detail || r.status);
    plot([], []); $("heatmap").hidden = true; showPersons(r); return;
  }
  const calibrated = r.calibration && r.calibration !== "uncalibrated";
  const verdict = calibrated ? r.verdict : r.label;
  $("verdict").className = verdict;
  $("verdict").innerHTML = `<span id="label">${esc(verdict.replace("_", " ").toUpperCase())}</span> — ` + (calibrated
    ? `probability <span id="probability">${r.probability.toFixed(3)}</span> <span class="detail">(score <span id="score">${r.score.toFixed(3)}</span>)</span>`
    : `score <span id="score">${r.score.toFixed(3)}</span>
       <div id="uncalibrated" class="banner">uncalibrated: a raw score, not a probability, and no tiers. Run <code>hcsi calibrate</code> on labelled videos like these to get probabilities and tiers.</div>`)
    + `<div class="detail" id="meaning">${esc(r.verdict_meaning || "")}</div>`
    + `<div class="detail">${r.frames_used} frame(s) with a face, ${r.faces_found} face(s).</div>`;
  $("status").textContent = "";
  plot(r.frame_indices, r.frame_scores, r.decided_by, r.persons);
  showPersons(r);
  if(r.heatmap_url){ $("heatmap").src = withToken(r.heatmap_url); $("heatmap").hidden = false; }
  else $("heatmap").hidden = true;
  $("report").innerHTML = r.report_url ? `<a id="report-link" href="${withToken(r.report_url)}" target="_blank">case report (HTML)</a>` : "";
}
function withToken(url){ return url + (token ? (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : ""); }
function esc(t){ return String(t).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})[c]); }
async function getJson(url){ const r = await fetch(url, {headers: headers()}); return r.json(); }
let followed = null;  // the one job the page follows; following another (or none) ends the earlier loop
async function follow(id){
  followed = id;
  while(followed === id){
    const r = await fetch("/v1/jobs/" + encodeURIComponent(id), {headers: headers()});
    if(followed !== id) return;
    if(r.status === 404 || r.status === 401){
      followed = null; $("progress").style.display = "none";
      show({detail: r.status === 404 ? "This job no longer exists (it was deleted)." : "The API token is missing or wrong: open the page with ?token=..."});
      loadHistory(); return;
    }
    if(!r.ok){ $("status").textContent = `server answered ${r.status}; retrying ...`; await new Promise(ok => setTimeout(ok, 2000)); continue; }
    const job = await r.json();
    if(job.status === "done" || job.status === "failed"){
      followed = null; $("status").textContent = ""; show(job.result || {status: job.status, reason: job.reason});
      if(job.status === "done") labelBar(job); loadHistory(); return;
    }
    const p = job.progress || {};
    $("status").textContent = job.status === "queued" ? "queued ..." :
      `running: ${p.stage || "starting"}` + (p.frames_total ? ` (${p.frames_done} of ${p.frames_total} frames)` : "");
    if(p.frames_total) $("progress").value = 100 * p.frames_done / p.frames_total;  // of the current stage
    else $("progress").removeAttribute("value");
    await new Promise(ok => setTimeout(ok, 500));
  }
}
function send(file){
  followed = null; $("labelbar").hidden = true;  // a new upload: stop following the earlier job
  const form = new FormData(); form.append("file", file);
  if($("frames").value) form.append("frames", $("frames").value);
  form.append("priority", "interactive");  // a person is waiting: before batch jobs
  const xhr = new XMLHttpRequest(); xhr.open("POST", "/v1/jobs");
  for(const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
  $("progress").style.display = "block"; $("progress").value = 0; $("verdict").textContent = "";
  $("status").textContent = "uploading " + file.name + " ...";
  xhr.upload.onprogress = e => { if(e.lengthComputable) $("progress").value = 100 * e.loaded / e.total; };
  xhr.onload = () => { let r; try { r = JSON.parse(xhr.responseText); } catch(e) { r = {detail: xhr.statusText}; }
    if(xhr.status === 202 || xhr.status === 200) { loadHistory(); follow(r.id); return; }
    if(xhr.status === 503) r.detail = "server busy, try again in a moment"; show(r); };
  xhr.onerror = () => show({detail: "network error"});
  xhr.send(form);
}
let offset = 0;
function historyFilters(){
  const q = new URLSearchParams();
  for(const name of ["status", "verdict", "label", "provenance"]) if($("filter-" + name).value) q.set(name, $("filter-" + name).value);
  if($("search").value) q.set("q", $("search").value);
  return q;
}
function interval(r){ return r.value === null ? "–" : `${(100 * r.value).toFixed(0)} % (95 % CI ${(100 * r.ci95[0]).toFixed(0)}–${(100 * r.ci95[1]).toFixed(0)} %, of ${r.of})`; }
async function loadLabelSummary(){
  const s = await getJson("/v1/labels/summary");
  if(!s.labelled) return;
  const n = s.labelled.fake + s.labelled.real + s.labelled.unsure;
  $("label-summary").textContent = !n ? "No job labelled yet: label finished jobs to see how the verdicts hold up." :
    `Labelled jobs: ${s.labelled.fake} fake, ${s.labelled.real} real, ${s.labelled.unsure} unsure. Called fake = ${s.called_fake}: `
    + `precision ${interval(s.precision)}, recall ${interval(s.recall)}, false-positive rate ${interval(s.fpr)}.`
    + (s.other_settings ? ` (${s.other_settings} labelled job(s) made with another checkpoint or calibration not counted.)` : "");
}
async function loadHistory(){
  const q = historyFilters(); q.set("limit", 20); q.set("offset", offset);
  $("export").href = withToken("/v1/jobs.csv?" + historyFilters());
  const page = await getJson("/v1/jobs?" + q);
  $("history").tBodies[0].innerHTML = (page.jobs || []).map(j => `<tr data-id="${esc(j.id)}">
    <td>${new Date(j.created * 1000).toLocaleString()}</td><td class="file" title="${esc(j.file_name)}"><bdi>${esc(j.file_name)}</bdi></td><td>${esc(j.status)}</td>
    <td class="${esc(j.verdict || "")}">${esc(j.verdict || "–")}</td><td>${j.score === null ? "–" : j.score.toFixed(3)}</td>
    <td>${esc(j.analyst_label || "–")}</td><td class="p-${esc(j.provenance || "")}">${esc(j.provenance || "–")}</td><td>${esc(j.model)}</td></tr>`).join("");
  for(const row of $("history").tBodies[0].rows) row.onclick = () => follow(row.dataset.id);
  const shown = (page.jobs || []).length;
  $("paging").innerHTML = `${page.total || 0} job(s)` + (offset ? ' <button id="newer">newer</button>' : "")
    + (offset + shown < page.total ? ' <button id="older">older</button>' : "");
  if($("newer")) $("newer").onclick = () => { offset = Math.max(0, offset - 20); loadHistory(); };
  if($("older")) $("older").onclick = () => { offset += 20; loadHistory(); };
  loadLabelSummary();
}
let labelled = null;  // the finished job whose label bar is shown
function labelBar(job){
  labelled = job.id; $("labelbar").hidden = false;
  $("label-note").value = job.label_note || ""; $("label-by").value = job.label_by || localStorage.getItem("hcsi-by") || "";
  $("label-state").textContent = job.analyst_label ? `labelled ${job.analyst_label}` + (job.label_by ? ` by ${job.label_by}` : "") : "not labelled";
}
for(const button of document.querySelectorAll("#labelbar button")) button.onclick = async () => {
  localStorage.setItem("hcsi-by", $("label-by").value);
  const r = await fetch(`/v1/jobs/${encodeURIComponent(labelled)}/label`, {method: "PUT",
    headers: {...headers(), "Content-Type": "application/json"},
    body: JSON.stringify({label: button.dataset.label, note: $("label-note").value, by: $("label-by").value})});
  if(r.ok){ labelBar(await r.json()); loadHistory(); } else $("label-state").textContent = `not saved (${r.status})`;
};
$("refresh").onclick = () => { offset = 0; loadHistory(); };
$("filter-status").onchange = $("filter-verdict").onchange = $("filter-label").onchange = $("filter-provenance").onchange = $("refresh").onclick;
$("search").onkeydown = e => { if(e.key === "Enter") $("refresh").onclick(); };
loadHistory();
setInterval(() => { if(document.visibilityState === "visible") loadHistory(); }, 5000);
$("file").onchange = e => e.target.files[0] && send(e.target.files[0]);
const drop = $("drop");
drop.ondragover = e => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = e => { e.preventDefault(); drop.classList.remove("over"); e.dataTransfer.files[0] && send(e.dataTransfer.files[0]); };
</script></body></html>
""".replace("__PERSON_COLOURS__", json.dumps(PERSON_COLOURS))
