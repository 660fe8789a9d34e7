// Makes a copy of a worker build whose JavaScript glue counts the calls from wasm into
// JavaScript (every import of index_bg.wasm) and logs them every 1,000 requests: how many
// times a request crosses the boundary, and through which imports. Not part of `make test`.
//
//   node scripts/count-calls.mjs [BUILD_DIR] [OUT_DIR]        (default: build, build-counted)
//   BENCH_ECHO=1 PORTCULLIS_BENCH_BUILD=build-counted node scripts/bench-serve.mjs latency 2>&1 | grep 'calls per request'
//
// Each latency row then logs one line per 1,000 requests: the calls per request and the
// imports by count (names without wasm-bindgen's hash suffix). The counting itself costs
// time: use the counts, not the timings, of such a run.
import fs from 'node:fs';
import path from 'node:path';

const [from = 'build', to = 'build-counted'] = process.argv.slice(2);
fs.rmSync(to, { recursive: true, force: true });
fs.cpSync(from, to, { recursive: true });
const file = path.join(to, 'index.js');
let src = fs.readFileSync(file, 'utf8');

// The function returning the import object ({"./index_bg.js": {...}}): wrap each import.
const imports = src.match(/function (\w+)\(\)\{return\{__proto__:null,"\.\/index_bg\.js":/);
if (!imports) throw new Error(`${file}: the import object was not found (wasm-bindgen's output changed?)`);
const name = imports[1];
src = src.replace(imports[0], `function ${name}(){const o=${name}_counted();const m=o["./index_bg.js"];globalThis.__calls??={};`
  + 'for(const k of Object.keys(m)){const f=m[k];if(typeof f==="function"){m[k]=function(...a){globalThis.__calls[k]=(globalThis.__calls[k]||0)+1;return f.apply(this,a)}}}'
  + `return o}function ${name}_counted(){return{__proto__:null,"./index_bg.js":`);

// The fetch handler: count requests, log and reset every 1,000.
const handler = src.match(/\.prototype\.fetch=function\((\w)\)\{return (\w+)\.call\(this,\1,this\.env,this\.ctx\)\}/);
if (!handler) throw new Error(`${file}: the fetch handler was not found (worker-build's output changed?)`);
const [, arg, inner] = handler;
src = src.replace(handler[0], `.prototype.fetch=function(${arg}){globalThis.__requests=(globalThis.__requests||0)+1;`
  + 'if(globalThis.__requests%1000===0){const c=globalThis.__calls;const t=Object.values(c).reduce((a,b)=>a+b,0);'
  + 'console.log("calls per request "+(t/1000)+" "+JSON.stringify(Object.entries(c).sort((a,b)=>b[1]-a[1]).map(([k,v])=>k.replace(/_[0-9a-f]{16}$/,"")+":"+(v/1000))));'
  + `globalThis.__calls={}}return ${inner}.call(this,${arg},this.env,this.ctx)}`);
fs.writeFileSync(file, src);
console.log(`${to}: ${from} with counted calls`);
