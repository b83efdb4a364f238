// The dashboard page at `/`: one self-contained HTML document that polls /api/dashboard once a second.
// No build step and no external assets, so it works on a machine with no network. An admin token, when needed, is
// given in the page's fragment (`/#token=...`), which browsers never send to a server or put in a Referer.
export function dashboardPage(): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>toolbus</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1b1f24;background:#f6f8fa}
h1{font-size:1.3rem;margin:0 0 1rem} h2{font-size:1rem;margin:1.2rem 0 .4rem}
table{border-collapse:collapse;background:#fff;min-width:40rem} td,th{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:left}
th{background:#eaeef2} .ok{color:#1a7f37} .bad{color:#cf222e} .muted{color:#57606a}
</style></head>
<body>
<h1>toolbus <span id="replica" class="muted"></span></h1>
<div id="status" class="muted">loading…</div>
<h2>Agents</h2><table id="agents"><thead><tr><th>agent</th><th>tenant</th><th>weight</th><th>sessions</th></tr></thead><tbody></tbody></table>
<h2>Upstreams</h2><table id="upstreams"><thead><tr><th>upstream</th><th>state</th><th>pid</th><th>breaker</th><th>tools</th><th>in flight</th><th>queued</th><th>queued per agent</th></tr></thead><tbody></tbody></table>
<h2>Calls in flight <span id="inflight-count" class="muted"></span></h2><table id="calls"><thead><tr><th>agent</th><th>tool</th><th>running for (ms)</th></tr></thead><tbody></tbody></table>
<h2>Leases</h2><table id="leases"><thead><tr><th>scope</th><th>holder</th><th>fencing token</th><th>waiting</th></tr></thead><tbody></tbody></table>
<h2>Recent replays and errors</h2><table id="recent"><thead><tr><th>time</th><th>agent</th><th>tool</th><th>outcome</th><th>ms</th></tr></thead><tbody></tbody></table>
<script>
function cell(v){const td=document.createElement('td');td.textContent=v==null?'':String(v);return td}
function fill(id,rows,cols){const tb=document.querySelector('#'+id+' tbody');tb.replaceChildren(...rows.map(r=>{const tr=document.createElement('tr');for(const c of cols){const td=cell(typeof c==='function'?c(r):r[c]);tr.appendChild(td)}tr.dataset.key=String(r[cols[0]]??'');return tr}))}
async function tick(){
  try{
    const t=new URLSearchParams(location.hash.slice(1)).get('token');const r=await fetch('/api/dashboard',{cache:'no-store',headers:t?{authorization:'Bearer '+t}:{}});if(!r.ok)throw new Error('HTTP '+r.status);const d=await r.json();
    document.getElementById('replica').textContent='replica '+d.replica+' · store '+d.store.kind+(d.store.ok?'':' (unreachable)');
    fill('agents',d.agents,['id','tenant','weight','sessions']);
    fill('upstreams',d.upstreams,['name','state','pid','breaker','tools','inFlight','queued',u=>Object.entries(u.perAgent||{}).filter(([,v])=>v.queued>0).map(([k,v])=>k+':'+v.queued).join(' ')]);
    fill('calls',d.calls,['agent','tool','ms']);
    document.getElementById('inflight-count').textContent='('+d.calls.length+')';
    fill('leases',d.leases,['scope',l=>l.agent?l.agent+' · '+l.tool:l.holder,'token','waiters']);
    fill('recent',d.recent,[e=>new Date(e.at).toLocaleTimeString(),'agent','tool',e=>e.outcome+(e.code?' ('+e.code+')':''),'durationMs']);
    const st=document.getElementById('status');st.textContent='updated '+new Date().toLocaleTimeString();st.className='ok';
  }catch(e){const st=document.getElementById('status');st.textContent='cannot reach the bus';st.className='bad'}
}
tick();setInterval(tick,1000);
</script></body></html>`;
}
