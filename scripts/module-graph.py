#!/usr/bin/env python3
"""The top-level modules of src/ and which others their non-test code names (`crate::X`), then the
import cycles among them (strongly connected components). Usage: python3 scripts/module-graph.py [src]"""
import os, re, sys, itertools
root = sys.argv[1] if len(sys.argv) > 1 else 'src'
mods = set()
for f in os.listdir(root):
    if f.endswith('.rs') and f not in ('lib.rs', 'main.rs'):
        mods.add(f[:-3])
    elif os.path.isdir(os.path.join(root, f)):
        mods.add(f)
edges = {m: set() for m in mods}
def strip_tests(text):
    # drop #[cfg(test)] mod ... { } blocks (brace matching)
    out, i = [], 0
    while True:
        j = text.find('#[cfg(test)]', i)
        if j < 0:
            out.append(text[i:]); break
        out.append(text[i:j])
        k = text.find('{', j)
        semi = text.find(';', j)
        if k < 0:
            i = len(text); continue
        if semi != -1 and semi < k:
            i = semi + 1; continue
        depth = 0
        for p in range(k, len(text)):
            if text[p] == '{': depth += 1
            elif text[p] == '}':
                depth -= 1
                if depth == 0:
                    i = p + 1; break
        else:
            i = len(text)
    return ''.join(out)
for dirpath, _, files in os.walk(root):
    for f in files:
        if not f.endswith('.rs'): continue
        path = os.path.join(dirpath, f)
        rel = os.path.relpath(path, root)
        top = rel.split(os.sep)[0]
        top = top[:-3] if top.endswith('.rs') else top
        if top not in mods: continue
        if f == 'tests.rs' or f.endswith('_tests.rs'): continue
        text = strip_tests(open(path).read())
        text = re.sub(r'//[^\n]*', '', text)
        for m in re.finditer(r'crate::([a-z_0-9]+)', text):
            t = m.group(1)
            if t in mods and t != top:
                edges[top].add(t)
        # `use crate::{a, b::c}` groups
        for m in re.finditer(r'crate::\{([^}]*)\}', text, re.S):
            for part in re.split(r'[,\s]+', m.group(1)):
                t = part.split('::')[0]
                if t in mods and t != top:
                    edges[top].add(t)
for m in sorted(edges):
    print(f'{m:12} -> {", ".join(sorted(edges[m]))}')
# strongly connected components (Tarjan)
index, low, stack, on, sccs, c = {}, {}, [], set(), [], [0]
def sc(v):
    index[v] = low[v] = c[0]; c[0] += 1; stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        sccs.append(comp)
sys.setrecursionlimit(10000)
for v in edges:
    if v not in index: sc(v)
cyc = [s for s in sccs if len(s) > 1]
print('cycles:', cyc if cyc else 'none')
