// The dashboard page at `/`: one self-contained HTML document that polls /api/dashboard once a second and draws the
// last minutes as inline SVG charts (calls/s with errors, p50/p99 latency, queue depth and calls in flight, lease
// waits, per upstream), beside tables of agents with their totals, upstreams with state, last error and restarts,
// calls in flight with what each is doing (waiting for a lease, queued, with the upstream), leases and recent errors.
// No build step and no external assets, so it works on a machine with no network. An admin token, when needed, is
// given in the page's fragment (`/#token=...`), which browsers never send to a server or put in a Referer.
export function dashboardPage(): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>toolbus</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1b1f24;background:#f6f8fa}
h1{font-size:1.3rem;margin:0 0 1rem} h2{font-size:1rem;margin:1.2rem 0 .4rem} h3{font-size:.95rem;margin:.2rem 0 .4rem}
table{border-collapse:collapse;background:#fff;min-width:40rem} td,th{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:left}
th{background:#eaeef2} .ok{color:#1a7f37} .bad{color:#cf222e} .warn{color:#9a6700} .muted{color:#57606a}
.charts{display:flex;flex-direction:column;gap:.8rem}
.upstream-charts{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.6rem .8rem}
.row{display:flex;flex-wrap:wrap;gap:1rem}
figure{margin:0} figcaption{font-size:12px;color:#57606a}
svg.chart{background:#fbfcfd;border:1px solid #eaeef2}
svg.chart text{font:10px system-ui,sans-serif;fill:#57606a}
.legend span{display:inline-block;margin-right:.7rem;font-size:12px} .legend i{display:inline-block;width:10px;height:3px;margin-right:3px;vertical-align:middle}
td.err{max-width:28rem;white-space:normal;font-size:12px}
</style></head>
<body>
<h1>toolbus <span id="replica" class="muted"></span></h1>
<div id="status" class="muted">loading…</div>
<h2>Upstreams over the last <span id="window">minutes</span></h2><div id="charts" class="charts"></div>
<h2>Agents</h2><table id="agents"><thead><tr><th>agent</th><th>tenant</th><th>weight</th><th>sessions</th><th>calls</th><th>errors</th><th>replays</th><th>avg ms</th><th>last call</th></tr></thead><tbody></tbody></table>
<h2>Upstreams</h2><table id="upstreams"><thead><tr><th>upstream</th><th>state</th><th>pid</th><th>breaker</th><th>tools</th><th>in flight</th><th>queued</th><th>queued per agent</th><th>restarts</th><th>last error</th><th>sharing · sessions</th><th>protocol</th></tr></thead><tbody></tbody></table>
<h2>Calls in flight <span id="inflight-count" class="muted"></span></h2><table id="calls"><thead><tr><th>agent</th><th>tool</th><th>doing</th><th>running for (ms)</th></tr></thead><tbody></tbody></table>
<h2>Leases</h2><table id="leases"><thead><tr><th>scope</th><th>holder</th><th>fencing token</th><th>waiting</th></tr></thead><tbody></tbody></table>
<h2>Recent replays and errors <span class="muted">(latest 15)</span></h2><table id="recent"><thead><tr><th>time</th><th>agent</th><th>tool</th><th>outcome</th><th>ms</th></tr></thead><tbody></tbody></table>
<script>
function cell(v){const td=document.createElement('td');td.textContent=v==null?'':String(v);return td}
function fill(id,rows,cols){const tb=document.querySelector('#'+id+' tbody');tb.replaceChildren(...rows.map(r=>{const tr=document.createElement('tr');for(const c of cols){const td=cell(typeof c==='function'?c(r):r[c]);tr.appendChild(td)}tr.dataset.key=String(r[cols[0]]??'');return tr}))}
function esc(s){return String(s).replace(/[&<>"']/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]))}
const PHASE={lease:'waiting for a lease',queue:'queued for the upstream',upstream:'with the upstream'};
function niceMax(v){if(!(v>0))return 1;const p=Math.pow(10,Math.floor(Math.log10(v)));for(const m of [1,2,2.5,5,10])if(m*p>=v)return m*p;return 10*p}
function fmt(v,unit){if(v==null)return '–';if(unit==='ms')return v>=1000?(v/1000).toFixed(v>=10000?0:1)+' s':(v>=10?Math.round(v):v.toFixed(1))+' ms';return v>=100?Math.round(v):Math.round(v*100)/100}
// One chart: a polyline per series over the window; a null value breaks the line (no calls, no latency).
function chart(kind,title,series,pts,unit,bucketMs,ref){
  const W=320,H=120,L=48,R=6,T=8,B=16,n=pts.length;
  let peak=0;for(const s of series)for(const p of pts){const v=p[s.key];if(v!=null&&v>peak)peak=v}
  const max=niceMax(Math.max(peak,ref?ref.value:0));const x=i=>L+(n<2?0:i*(W-L-R)/(n-1));const y=v=>T+(H-T-B)*(1-v/max);
  let body='';
  for(const f of [0,.5,1]){const yy=y(max*f);body+='<line x1="'+L+'" x2="'+(W-R)+'" y1="'+yy+'" y2="'+yy+'" stroke="#eaeef2"/><text x="'+(L-3)+'" y="'+(yy+3)+'" text-anchor="end">'+esc(fmt(max*f,unit))+'</text>'}
  if(ref){const yy=y(ref.value);body+='<line data-ref="budget" x1="'+L+'" x2="'+(W-R)+'" y1="'+yy+'" y2="'+yy+'" stroke="#cf222e" stroke-dasharray="4 3"/><text x="'+(W-R)+'" y="'+(yy-3)+'" text-anchor="end">'+esc(ref.label)+'</text>'}
  const mins=Math.round(n*bucketMs/60000);
  body+='<text x="'+L+'" y="'+(H-3)+'">−'+mins+' min</text><text x="'+(W-R)+'" y="'+(H-3)+'" text-anchor="end">now</text>';
  for(const s of series){let d='',pen=false;pts.forEach((p,i)=>{const v=p[s.key];if(v==null){pen=false;return}d+=(pen?'L':'M')+x(i).toFixed(1)+' '+y(v).toFixed(1)+' ';pen=true});
    if(s.fill&&d)body+='<path d="'+d+'L'+x(n-1)+' '+y(0)+' L'+L+' '+y(0)+' Z" fill="'+s.color+'" fill-opacity=".12" stroke="none"/>';
    body+='<path data-series="'+s.key+'" d="'+d+'" fill="none" stroke="'+s.color+'" stroke-width="1.6"/>'}
  const last=pts.length?pts[pts.length-1]:{};
  const legend=series.map(s=>'<span><i style="background:'+s.color+'"></i>'+esc(s.label)+' '+esc(fmt(last[s.key],unit))+'</span>').join('');
  return '<figure><figcaption>'+esc(title)+'</figcaption><svg class="chart" data-chart="'+kind+'" data-peak="'+peak+'" width="'+W+'" height="'+H+'" viewBox="0 0 '+W+' '+H+'" role="img" aria-label="'+esc(title)+'">'+body+'</svg><div class="legend">'+legend+'</div></figure>';
}
function drawCharts(d){
  const tl=d.timeline;if(!tl)return;
  const first=Object.values(tl.upstreams)[0];document.getElementById('window').textContent=Math.round((first?first.length:0)*tl.bucketMs/60000)+' minutes';
  const box=document.getElementById('charts');
  const html=d.upstreams.map(u=>{const pts=tl.upstreams[u.name]||[];
    const lastRate=pts.length>1?pts[pts.length-2].rate:0;const rl=u.rateLimit;
    const budget=rl?' · <span class="budget">budget '+esc(fmt(lastRate,''))+' of '+esc(rl.perSecond)+'/s ('+Math.round(100*lastRate/rl.perSecond)+'%)</span>':'';
    const st='<span class="'+(u.state==='ready'?'ok':u.state==='needs_login'?'warn':'bad')+'">'+esc(u.state)+'</span>';
    return '<section class="upstream-charts" data-upstream="'+esc(u.name)+'"><h3>'+esc(u.name)+' · '+st+' · breaker '+esc(u.breaker)+' · restarts '+esc(u.restarts??0)+budget+(u.state==='needs_login'?' · <b class="warn">needs login</b>':'')+'</h3><div class="row">'+
      chart('rate','calls/s',[{key:'rate',label:'calls/s',color:'#0969da',fill:true},{key:'errorRate',label:'errors/s',color:'#cf222e'}],pts.map(p=>({...p,errorRate:p.calls?p.rate*p.errors/p.calls:0})),'',tl.bucketMs,rl?{value:rl.perSecond,label:'rate limit '+rl.perSecond+'/s'}:null)+
      chart('latency','latency',[{key:'p50',label:'p50',color:'#1a7f37'},{key:'p99',label:'p99',color:'#bf8700'}],pts,'ms',tl.bucketMs)+
      chart('queue','queue depth and calls in flight',[{key:'queued',label:'queued',color:'#8250df',fill:true},{key:'inFlight',label:'in flight',color:'#0969da'}],pts,'',tl.bucketMs)+
      chart('lease','calls that waited for a lease',[{key:'leaseWaits',label:'lease waits',color:'#cf222e',fill:true}],pts,'',tl.bucketMs)+
      '</div></section>'}).join('');
  box.innerHTML=html;
}
function lastError(u){const c=u.lastCallError,e=u.lastError;const parts=[];if(e)parts.push(new Date(e.at).toLocaleTimeString()+' '+e.message);if(c)parts.push('last failed call '+new Date(c.at).toLocaleTimeString()+': '+c.tool+' '+c.outcome+(c.code?' ('+c.code+')':''));return parts.join(' · ')}
async function tick(){
  try{
    const t=new URLSearchParams(location.hash.slice(1)).get('token');const r=await fetch('/api/dashboard',{cache:'no-store',headers:t?{authorization:'Bearer '+t}:{}});if(!r.ok)throw new Error('HTTP '+r.status);const d=await r.json();
    document.getElementById('replica').textContent=(d.version?'v'+d.version+' · ':'')+'replica '+d.replica+' · store '+d.store.kind+(d.store.ok?'':' (unreachable)');
    drawCharts(d);
    const totals=(d.timeline&&d.timeline.agents)||{};
    fill('agents',d.agents,['id','tenant','weight','sessions',a=>(totals[a.id]||{}).calls||0,a=>(totals[a.id]||{}).errors||0,a=>(totals[a.id]||{}).replays||0,a=>{const x=totals[a.id];return x&&x.calls?Math.round(x.totalMs/x.calls):''},a=>{const x=totals[a.id];return x&&x.lastAt?new Date(x.lastAt).toLocaleTimeString():''}]);
    fill('upstreams',d.upstreams,['name','state','pid','breaker','tools','inFlight','queued',u=>Object.entries(u.perAgent||{}).filter(([,v])=>v.queued>0).map(([k,v])=>k+':'+v.queued).join(' '),u=>u.restarts??0,lastError,u=>(u.sharing||'shared')+(u.sessions?' · '+u.sessions.live+' of '+u.sessions.max+' sessions':''),u=>(u.protocols||[]).join(', ')]);
    for(const td of document.querySelectorAll('#upstreams tbody td:last-child'))td.className='err';
    fill('calls',d.calls,['agent','tool',c=>PHASE[c.phase]||'checking',c=>c.ms]);
    document.getElementById('inflight-count').textContent='('+d.calls.length+')';
    fill('leases',d.leases,['scope',l=>l.agent?l.agent+' · '+l.tool:l.holder,'token','waiters']);
    fill('recent',d.recent.slice(0,15),[e=>new Date(e.at).toLocaleTimeString(),'agent','tool',e=>e.outcome+(e.code?' ('+e.code+')':''),'durationMs']);
    const st=document.getElementById('status');st.textContent='updated '+new Date().toLocaleTimeString();st.className='ok';
  }catch(e){const st=document.getElementById('status');st.textContent='cannot reach the bus';st.className='bad'}
}
tick();setInterval(tick,1000);
</script></body></html>`;
}
