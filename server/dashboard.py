"""The dashboard page: counts and consumers, refreshed from /queue/stats."""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Job queue</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin-top:1rem}td,th{padding:.3rem .8rem;border-bottom:1px solid #ddd;text-align:left}
.counts{display:flex;gap:1.5rem;flex-wrap:wrap}.counts div{font-size:1.6rem}.counts span{display:block;font-size:.8rem;color:#666}
</style></head>
<body><h1>Job queue</h1>
<form method="post" action="/dashboard/logout" style="float:right"><button type="submit">Sign out</button></form>
<div class="counts" id="counts"></div>
<table><thead><tr><th>consumer</th><th>pool</th><th>host</th><th>pid</th><th>active</th><th>queued</th>
<th>concurrency</th><th>last seen</th></tr></thead><tbody id="workers"></tbody></table>
<p id="error" style="color:#b00"></p>
<script>
const names=["waiting","active","delayed","completed","failed","deadLettered","totalConcurrency"];
function cell(v){const td=document.createElement("td");td.textContent=v==null?"":String(v);return td}
async function refresh(){
  try{
    const r=await fetch("/queue/stats",{credentials:"same-origin"});
    if(!r.ok){document.getElementById("error").textContent="stats: HTTP "+r.status;return}
    const s=await r.json();
    const counts=document.getElementById("counts");counts.replaceChildren();
    for(const n of names){const d=document.createElement("div");d.textContent=s[n];
      const l=document.createElement("span");l.textContent=n;d.appendChild(l);counts.appendChild(d)}
    const rows=document.getElementById("workers");rows.replaceChildren();
    for(const w of s.workers){const tr=document.createElement("tr");
      for(const k of ["id","pool","host","pid","active","queued","concurrency","lastSeen"])tr.appendChild(cell(w[k]));
      rows.appendChild(tr)}
    document.getElementById("error").textContent="";
  }catch(e){document.getElementById("error").textContent=String(e)}
}
refresh();setInterval(refresh,2000);
</script></body></html>
"""
