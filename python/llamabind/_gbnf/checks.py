"""What llama.cpp checks once a grammar is parsed (every rule defined, the start rule present, no
left recursion), and the left recursion it misses and then hangs on."""

from __future__ import annotations

from .elements import ALT, CHAR_ALT, CHAR_RNG_UPPER, END, RULE_REF, Element, nullable_rules
from .errors import ParseFailure
from .parser import Parser


def check(parser: Parser, root: str) -> None:
    """What llama.cpp checks after parsing: every rule defined, the root present, no left
    recursion."""
    for ref, where in sorted(parser.first_ref.items(), key=lambda kv: kv[1]):
        if ref not in parser.rules:
            raise ParseFailure(where, f"undefined rule '{_rule_name(parser, ref)}'")
    if root not in parser.symbol_ids:
        named = [n for n, i in parser.symbol_ids.items() if "_" not in n]
        raise ParseFailure(0, f"no rule named '{root}' (the start rule); rules: {', '.join(named)}")
    _check_left_recursion(parser, parser.symbol_ids[root])


def _rule_name(parser: Parser, rule_id: int) -> str:
    for name, i in parser.symbol_ids.items():
        if i == rule_id:
            return name
    return str(rule_id)


def _left_edges(rules: dict[int, list[Element]], empty: dict[int, bool]) -> dict[int, list[tuple[int, bool]]]:
    """For each rule, the rules its alternatives can start with when the refs before them
    match nothing (by `empty`), each with whether it ends its alternative."""
    edges: dict[int, list[tuple[int, bool]]] = {}
    for rule_id, rule in rules.items():
        out: list[tuple[int, bool]] = []
        skipping = True
        for i, (kind, value) in enumerate(rule):
            if kind in (ALT, END):
                skipping = True
            elif skipping:
                if kind == RULE_REF:
                    out.append((value, rule[i + 1][0] in (ALT, END)))
                    skipping = empty[value]
                elif kind not in (CHAR_ALT, CHAR_RNG_UPPER):
                    skipping = False
        edges[rule_id] = out
    return edges


def _check_left_recursion(parser: Parser, root_id: int) -> None:
    # llama.cpp's own check: a cycle of leftmost references, passing only over rules with
    # a directly empty alternative.
    directly_empty = {r: any(k in (ALT, END) and (i == 0 or rule[i - 1][0] == ALT)
                             for i, (k, _) in enumerate(rule)) for r, rule in parser.rules.items()}
    edges = _left_edges(parser.rules, directly_empty)
    cycle = _find_cycle({r: [v for v, _ in out] for r, out in edges.items()}, list(parser.rules))
    if cycle:
        raise _left_recursion(parser, cycle, "")
    # llama.cpp misses cycles through rules that are empty only indirectly (`x ::= y`,
    # `y ::= "a"?`). Those with the reference in tail position it survives (the parse
    # stacks repeat); any other makes the stacks grow without end, and llama.cpp hangs.
    nullable = nullable_rules(parser.rules)
    edges = _left_edges(parser.rules, nullable)
    reachable = {root_id}
    todo = [root_id]
    while todo:
        for kind, value in parser.rules[todo.pop()]:
            if kind == RULE_REF and value not in reachable:
                reachable.add(value)
                todo.append(value)
    graph = {r: [v for v, _ in edges[r] if v in reachable] for r in reachable}
    component = _components(graph)
    for r in sorted(reachable):
        for v, tail in edges[r]:
            if not tail and v in reachable and component[v] == component[r]:
                path = _find_path(graph, v, r, component)
                raise _left_recursion(parser, [r, *path], " (llama.cpp would not detect it, and would hang)")


def _left_recursion(parser: Parser, cycle: list[int], note: str) -> ParseFailure:
    names: list[str] = []
    for rule_id in cycle:
        owner = parser.owner[rule_id]
        if not names or names[-1] != owner:
            names.append(owner)
    if len(names) > 1 and names[0] != names[-1]:
        names.append(names[0])
    culprit = parser.owner[cycle[0]]
    where = parser.defined_at.get(parser.symbol_ids.get(culprit, cycle[0]), parser.defined_at[cycle[0]])
    chain = " -> ".join(names) if len(names) > 1 else f"{culprit} -> {culprit}"
    return ParseFailure(where, f"left recursion: rule '{culprit}' can reach itself before matching any "
                               f"character ({chain}){note}; rewrite it with repetition, e.g. "
                               "'list ::= item (\",\" item)*' instead of 'list ::= list \",\" item | item'")


def _find_cycle(graph: dict[int, list[int]], order: list[int]) -> list[int] | None:
    """A cycle of `graph` as [a, b, ..., a], or None."""
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    for start in order:
        if state.get(start):
            continue
        path = [start]
        iters = [iter(graph[start])]
        state[start] = 1
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(graph[nxt]))
    return None


def _components(graph: dict[int, list[int]]) -> dict[int, int]:
    """Strongly connected components (Tarjan, iterative): node -> component number."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    component: dict[int, int] = {}
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component[member] = node
                    if member == node:
                        break
    return component


def _find_path(graph: dict[int, list[int]], src: int, dst: int, component: dict[int, int]) -> list[int]:
    """A shortest path src -> ... -> dst inside one component (breadth first)."""
    parent: dict[int, int | None] = {src: None}
    queue = [src]
    for node in queue:
        if node == dst:
            break
        for nxt in graph[node]:
            if nxt not in parent and component.get(nxt) == component[src]:
                parent[nxt] = node
                queue.append(nxt)
    path = []
    step: int | None = dst
    while step is not None:
        path.append(step)
        step = parent[step]
    return path[::-1]
