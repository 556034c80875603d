"""Repository context: file order (imports, cycles, determinism) and retrieved cross-file snippets (ranking,
exclusion of the sample's own file, budget, no leak of the middle, per-family layouts)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from finetune.data.context.layout import ContextSample, context_query, with_retrieved_context
from finetune.data.context.ordering import dependency_graph, order_files
from finetune.data.context.retrieval import RepoRetriever, split_identifier
from finetune.data.ingest.languages import comment_line
from finetune.data.tokenize.families import FAMILIES
from finetune.data.types import Document, Sample

# --------------------------------------------------------------------------------------------- ordering


def _py(path: str, text: str = "") -> Document:
    return Document(path, "python", text or f"X = {path!r}\n")


def _positions(docs: list[Document]) -> dict[str, int]:
    return {doc.path: i for i, doc in enumerate(docs)}


def _graph_paths(docs: list[Document]) -> dict[str, list[str]]:
    return {doc.path: [docs[j].path for j in deps] for doc, deps in zip(docs, dependency_graph(docs), strict=True)}


def _chain_repo() -> list[Document]:
    """a imports b imports c, listed in the worst order, among unrelated files in several directories."""
    return [
        _py("a.py", "import b\n\nprint(b.value)\n"),
        _py("b.py", "from c import thing\n\nvalue = thing()\n"),
        _py("c.py", "def thing():\n    return 1\n"),
        _py("aa/x.py"),
        _py("zz/y.py"),
        _py("mm/n.py"),
        _py("0first.py"),
    ]


def test_python_chain_puts_dependencies_first_for_every_seed_and_randomness() -> None:
    docs = _chain_repo()
    for randomness in (0.0, 0.3, 1.0):
        for seed in range(20):
            pos = _positions(order_files(docs, seed=seed, randomness=randomness))
            assert pos["c.py"] < pos["b.py"] < pos["a.py"], (seed, randomness)


def test_python_imports_resolve_packages_relative_imports_and_submodules() -> None:
    docs = [
        _py("pkg/__init__.py", "from .core import run\n"),
        _py("pkg/core.py", "from . import helpers\nfrom .sub.deep import f\nfrom ..outside import nothing\n"),
        _py("pkg/helpers.py", "import os\nimport pkg.sub as s, json\n"),
        _py("pkg/sub/__init__.py"),
        _py("pkg/sub/deep.py", "from ...toplevel import x\n"),
        _py("toplevel.py"),
        _py("tests/test_core.py", "from pkg import (\n    core,\n    helpers as h,\n)\nimport pkg.sub.deep\n"),
    ]
    graph = _graph_paths(docs)
    assert graph["pkg/__init__.py"] == ["pkg/core.py"]
    assert sorted(graph["pkg/core.py"]) == ["pkg/__init__.py", "pkg/helpers.py", "pkg/sub/deep.py"]
    assert graph["pkg/helpers.py"] == ["pkg/sub/__init__.py"]
    assert graph["pkg/sub/deep.py"] == ["toplevel.py"]  # three dots from pkg/sub climb to the root
    assert sorted(graph["tests/test_core.py"]) == [
        "pkg/__init__.py",
        "pkg/core.py",
        "pkg/helpers.py",
        "pkg/sub/deep.py",
    ]


def test_src_layout_and_script_directories() -> None:
    docs = [
        _py("src/mylib/__init__.py"),
        _py("src/mylib/api.py"),
        _py("tests/test_api.py", "from mylib.api import call\nimport gc\n"),
        _py("tools/gc.py"),
        _py("tools/run.py", "import gc\n"),
    ]
    graph = _graph_paths(docs)
    assert graph["tests/test_api.py"] == ["src/mylib/api.py"]  # `import gc` is not tools/gc.py
    assert graph["tools/run.py"] == ["tools/gc.py"]  # a script's neighbour shadows the standard library


def test_js_and_ts_imports_resolve_extensions_index_files_and_require() -> None:
    docs = [
        Document("src/app.ts", "typescript", "import { a } from './util';\nimport type { T } from \"./types.js\";\n"),
        Document("src/util.ts", "typescript", "const h = require('../lib/helper');\nexport * from './widgets';\n"),
        Document("src/types.ts", "typescript", "export type T = number;\n"),
        Document("src/widgets/index.tsx", "tsx", "import React from 'react';\nimport('./lazy').then(m => m);\n"),
        Document("src/widgets/lazy.jsx", "jsx", "export default 1;\n"),
        Document("lib/helper.js", "javascript", "module.exports = {};\n"),
    ]
    graph = _graph_paths(docs)
    assert sorted(graph["src/app.ts"]) == ["src/types.ts", "src/util.ts"]
    assert sorted(graph["src/util.ts"]) == ["lib/helper.js", "src/widgets/index.tsx"]
    assert graph["src/widgets/index.tsx"] == ["src/widgets/lazy.jsx"]  # 'react' is not a repository file
    pos = _positions(order_files(docs[::-1], seed=3, randomness=0.5))
    assert pos["lib/helper.js"] < pos["src/util.ts"] < pos["src/app.ts"]
    assert pos["src/widgets/lazy.jsx"] < pos["src/widgets/index.tsx"] < pos["src/util.ts"]


def test_c_includes_resolve_next_to_the_includer_then_by_path_suffix() -> None:
    docs = [
        Document("src/main.c", "c", '#include <stdio.h>\n#include "util.h"\n#include "net/sock.h"\nint main(){}\n'),
        Document("src/util.h", "c++", "int util(void);\n"),
        Document("include/net/sock.h", "c++", '#include "../../src/util.h"\n'),
        Document("src/util.c", "c", '#  include "util.h"\n'),
        Document("other/util.h", "c++", "int other(void);\n"),
    ]
    graph = _graph_paths(docs)
    assert sorted(graph["src/main.c"]) == ["include/net/sock.h", "src/util.h"]
    assert graph["include/net/sock.h"] == ["src/util.h"]
    assert graph["src/util.c"] == ["src/util.h"]
    pos = _positions(order_files(docs[::-1], seed=0, randomness=0.0))
    assert pos["src/util.h"] < pos["include/net/sock.h"] < pos["src/main.c"]


def test_cycles_neither_hang_nor_drop_files() -> None:
    docs = [
        _py("x.py", "import y\n"),
        _py("y.py", "import z\n"),
        _py("z.py", "import x\n"),
        _py("self.py", "import self\n"),
        _py("user.py", "import x\n"),
    ]
    for seed in range(10):
        out = order_files(docs, seed=seed, randomness=0.5)
        assert sorted(doc.path for doc in out) == sorted(doc.path for doc in docs)
        pos = _positions(out)
        assert max(pos["x.py"], pos["y.py"], pos["z.py"]) < pos["user.py"]


def test_output_is_a_permutation_even_with_duplicate_paths() -> None:
    docs = [_py("a.py", "import b\n"), _py("b.py"), _py("a.py", "import b\n"), _py("b.py", "# other copy\n")]
    out = order_files(docs, seed=1, randomness=1.0)
    assert sorted(map(id, out)) == sorted(map(id, docs))


def test_languages_without_imports_are_grouped_by_directory() -> None:
    paths = ["svc/b.go", "cmd/main.go", "svc/a.go", "cmd/flags.go", "svc/c.go", "api/x.go"]
    docs = [Document(p, "go", "package x\n") for p in paths]
    out = [doc.path for doc in order_files(docs, seed=0, randomness=0.0)]
    assert out == ["api/x.go", "cmd/flags.go", "cmd/main.go", "svc/a.go", "svc/b.go", "svc/c.go"]


def test_randomness_jumps_between_directories() -> None:
    docs = [Document(f"{d}/f{i}.go", "go", "package x\n") for d in ("a", "b", "c") for i in range(5)]

    def directory_runs(out: list[Document]) -> int:
        dirs = [doc.path.split("/")[0] for doc in out]
        return 1 + sum(x != y for x, y in zip(dirs, dirs[1:], strict=False))

    assert all(directory_runs(order_files(docs, seed=s, randomness=0.0)) == 3 for s in range(10))
    assert any(directory_runs(order_files(docs, seed=s, randomness=0.3)) > 3 for s in range(10))


def test_order_is_deterministic_per_seed_and_randomness_makes_seeds_differ() -> None:
    docs = [_py(f"d{i % 4}/m{i}.py", f"import m{i - 1}\n" if i % 3 else "") for i in range(24)]
    assert order_files(docs, seed=7, randomness=0.5) == order_files(docs, seed=7, randomness=0.5)
    fixed = {tuple(d.path for d in order_files(docs, seed=s, randomness=0.0)) for s in range(10)}
    assert len(fixed) == 1
    varied = {tuple(d.path for d in order_files(docs, seed=s, randomness=0.5)) for s in range(10)}
    assert len(varied) > 1


def test_randomness_out_of_range_is_rejected() -> None:
    for bad in (-0.1, 1.5):
        try:
            order_files([], seed=0, randomness=bad)
        except ValueError as err:
            assert "randomness" in str(err)
        else:
            raise AssertionError(f"randomness={bad} was accepted")


@settings(max_examples=60, deadline=None)
@given(
    edges=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), max_size=30),
    seed=st.integers(0, 2**32),
    randomness=st.floats(0, 1),
)
def test_any_import_graph_gives_a_permutation_with_acyclic_edges_respected(
    edges: list[tuple[int, int]], seed: int, randomness: float
) -> None:
    imports: dict[int, set[int]] = {i: set() for i in range(10)}
    for src, dst in edges:
        imports[src].add(dst)
    docs = [_py(f"p{i % 3}/m{i}.py", "".join(f"import m{j}\n" for j in sorted(imports[i]))) for i in range(10)]
    out = order_files(docs, seed=seed, randomness=randomness)
    assert sorted(map(id, out)) == sorted(map(id, docs))
    pos = _positions(out)
    # the modules live in directories without __init__.py: `import mJ` resolves only within the same directory
    for src, dst in edges:
        same_dir = src % 3 == dst % 3
        in_cycle = _reaches(imports, dst, src)
        if same_dir and src != dst and not in_cycle:
            assert pos[docs[dst].path] < pos[docs[src].path], (src, dst)


def _reaches(imports: dict[int, set[int]], start: int, goal: int) -> bool:
    """Whether `goal` is reachable from `start` along same-directory import edges (i.e. the edge is in a cycle)."""
    todo, seen = [start], {start}
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        for nxt in imports[node]:
            if nxt % 3 == node % 3 and nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


# --------------------------------------------------------------------------------------------- retrieval

_MAIN_PREFIX = "from billing.invoice import compute_invoice_total\n\n\ndef checkout(cart, tax_rate):\n    "
_MAIN_MIDDLE = "marker = 'ZEBRA_QUOKKA_7731'\n    frob = frobnicate_widget(cart)\n    "
_MAIN_SUFFIX = "total = compute_invoice_total(cart.line_items, tax_rate)\n    return total\n"


def _repo() -> list[Document]:
    return [
        _py(
            "billing/invoice.py",
            "def compute_invoice_total(line_items, tax_rate):\n"
            "    subtotal = sum(item.price * item.quantity for item in line_items)\n"
            "    return subtotal * (1 + tax_rate)\n",
        ),
        _py("billing/tax.py", "def tax_for_region(region):\n    return {'eu': 0.2, 'us': 0.07}[region]\n"),
        _py("util/strings.py", "def slugify(text):\n    return '-'.join(text.lower().split())\n"),
        # shares no term with main.py's prefix or suffix, only with its middle
        _py("widgets/frob.py", "frobnicate_widget = lambda widget: widget.frobnicated()\n"),
        _py("app/main.py", _MAIN_PREFIX + _MAIN_MIDDLE + _MAIN_SUFFIX),
    ]


def _sample(mode: str = "fim", language: str = "python") -> Sample:
    if mode == "plain":
        return Sample(mode="plain", path="app/main.py", language=language, text=_MAIN_PREFIX + _MAIN_SUFFIX)
    return Sample(
        mode="fim", path="app/main.py", language=language, prefix=_MAIN_PREFIX, middle=_MAIN_MIDDLE, suffix=_MAIN_SUFFIX
    )


def _all_text(context: ContextSample) -> str:
    return "".join(text for _, text in context.context) + context.lead


def test_split_identifier_splits_camel_and_snake_case() -> None:
    assert split_identifier("getHTTPResponse_code") == ["get", "http", "response", "code", "gethttpresponse_code"]
    assert split_identifier("XMLParser") == ["xml", "parser", "xmlparser"]
    assert split_identifier("self") == ["self"]
    assert split_identifier("i") == []
    assert split_identifier("naïveCafé") == ["naïvecafé"]


def test_the_most_similar_other_file_ranks_first() -> None:
    retriever = RepoRetriever(_repo())
    query = "total = computeInvoiceTotal(lineItems, taxRate)"
    snippets = retriever.retrieve(query, exclude_path="app/main.py", k=3)
    assert snippets[0].path == "billing/invoice.py"
    assert [s.score for s in snippets] == sorted((s.score for s in snippets), reverse=True)
    assert retriever.retrieve("slugify the title text", exclude_path="", k=1)[0].path == "util/strings.py"


def test_the_excluded_file_is_never_returned() -> None:
    retriever = RepoRetriever(_repo())
    query = _MAIN_PREFIX + _MAIN_MIDDLE + _MAIN_SUFFIX
    assert retriever.retrieve(query, exclude_path="", k=1)[0].path == "app/main.py"  # it would win otherwise
    paths = [s.path for s in retriever.retrieve(query, exclude_path="app/main.py", k=10)]
    assert paths and "app/main.py" not in paths


def test_no_overlapping_windows_and_no_zero_scores() -> None:
    long = "".join(f"def handler_{i}(request):\n    return respond(request, {i})\n" for i in range(60))
    retriever = RepoRetriever([_py("long.py", long), _py("other.py", "x = 1\n")], window=10, stride=5)
    snippets = retriever.retrieve("respond request handler", exclude_path="", k=50)
    spans = sorted((s.start_line, s.start_line + s.text.count("\n")) for s in snippets)
    assert len(spans) > 5
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:], strict=False))
    assert all(s.path == "long.py" for s in snippets)  # other.py shares no term with the query
    assert retriever.retrieve("nothing_matches_this", exclude_path="", k=5) == []


def test_k_snippets_come_back_even_when_the_best_windows_all_overlap() -> None:
    dense = "needle needle needle needle needle\n" * 40  # every top-scoring window lies in lines 0..45
    sparse = "".join(f"needle {'pad ' * (i % 5)}\n" for i in range(100))
    retriever = RepoRetriever([_py("hay.py", dense + sparse)], window=10, stride=1)
    snippets = retriever.retrieve("needle", exclude_path="", k=5)
    spans = sorted((s.start_line, s.start_line + 10) for s in snippets)
    assert len(spans) == 5
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:], strict=False))


def test_retrieval_is_deterministic_and_ties_go_to_the_earlier_file() -> None:
    text = "def shared_function(alpha, beta):\n    return alpha + beta\n"
    docs = [_py("z_first.py", text), _py("a_second.py", text), _py("m.py", "print('unrelated')\n")]
    first = RepoRetriever(docs).retrieve("shared_function alpha beta", exclude_path="", k=2)
    again = RepoRetriever(docs).retrieve("shared_function alpha beta", exclude_path="", k=2)
    assert first == again
    assert [s.path for s in first] == ["z_first.py", "a_second.py"]


def test_query_is_prefix_tail_and_suffix_head_never_the_middle() -> None:
    sample = Sample(mode="fim", path="f.py", prefix="P" * 3000, middle="MIDDLE", suffix="S" * 3000)
    query = context_query(sample, chars=2000)
    assert "MIDDLE" not in query and "M" not in query
    assert query.count("P") == 1500 and query.count("S") == 500
    short = context_query(Sample(mode="fim", path="f.py", prefix="pp", middle="m", suffix="S" * 3000), chars=100)
    assert short.count("p") == 2 and short.count("S") == 98  # a short prefix leaves the rest to the suffix


def test_the_middle_never_reaches_the_context() -> None:
    retriever = RepoRetriever(_repo())
    for family in (*FAMILIES, None):
        for mode in ("fim", "plain"):
            context = with_retrieved_context(
                _sample(mode), retriever, budget_chars=10_000, k=10, family=family, repo_name="shop"
            )
            text = _all_text(context)
            assert "billing/invoice.py" in text  # context was added: the checks below are not vacuous
            assert "ZEBRA_QUOKKA_7731" not in text and "app/main.py\nfrom" not in text
            # frob.py matches only the middle's `frobnicate_widget`: retrieving it would mean the query saw the middle
            assert "widgets/frob.py" not in text
            assert context.sample == _sample(mode)


def test_budget_is_respected_and_large_budgets_fill() -> None:
    retriever = RepoRetriever(_repo())
    for family in ("starcoder", "qwen", "codellama", "aixcoder", None):
        sizes = []
        for budget in (0, 10, 60, 150, 300, 10_000):
            context = with_retrieved_context(
                _sample(), retriever, budget_chars=budget, k=4, family=family, repo_name="r"
            )
            assert context.context_chars == len(_all_text(context)) <= budget, (family, budget)
            sizes.append(context.context_chars)
        assert sizes[0] == 0 and sizes[-1] > 150
        assert sizes == sorted(sizes), family


def _expected_snippets(retriever: RepoRetriever, k: int) -> list[tuple[str, str]]:
    found = retriever.retrieve(context_query(_sample()), exclude_path="app/main.py", k=k)
    return [(s.path, s.text) for s in reversed(found)]  # the best snippet last, next to the code


def test_qwen_layout_matches_the_documented_repo_level_fim_format() -> None:
    retriever = RepoRetriever(_repo())
    context = with_retrieved_context(_sample(), retriever, budget_chars=10_000, k=2, family="qwen", repo_name="shop")
    snippets = _expected_snippets(retriever, 2)
    assert len(snippets) == 2 and snippets[-1][0] == "billing/invoice.py"
    expected = "<|repo_name|>shop\n" + "".join(f"<|file_sep|>{p}\n{t}\n" for p, t in snippets)
    assert context_text(context, "qwen") == expected + "<|file_sep|>app/main.py\n"
    assert context.lead == ""
    assert [kind for kind, _ in context.context][:3] == ["repo_name", "text", "file_sep"]
    assert all(text == "" for kind, text in context.context if kind != "text")
    assert not any("<|" in text for kind, text in context.context)  # tokens are segments, never text


def test_starcoder_layout_puts_the_current_path_at_the_start_of_the_prefix() -> None:
    retriever = RepoRetriever(_repo())
    context = with_retrieved_context(
        _sample(), retriever, budget_chars=10_000, k=2, family="starcoder", repo_name="shop"
    )
    snippets = _expected_snippets(retriever, 2)
    expected = "<repo_name>shop" + "".join(f"<file_sep>{p}\n{t}" for p, t in snippets) + "<file_sep>"
    assert context_text(context, "starcoder") == expected
    assert context.lead == "app/main.py\n"
    assert context.context[-1] == ("file_sep", "")


def test_repo_layout_without_a_repository_name_has_no_repo_name_token() -> None:
    retriever = RepoRetriever(_repo())
    for family in ("qwen", "starcoder"):
        context = with_retrieved_context(_sample(), retriever, budget_chars=10_000, k=2, family=family)
        kinds = [kind for kind, _ in context.context]
        assert "repo_name" not in kinds and kinds[0] == "file_sep"


def test_families_without_repository_tokens_get_commented_snippets_in_the_lead() -> None:
    retriever = RepoRetriever(_repo())
    snippets = _expected_snippets(retriever, 2)
    for family in ("codellama", "deepseek", "aixcoder", None):
        assert family is None or FAMILIES[family].repo_name is None
        context = with_retrieved_context(_sample(), retriever, budget_chars=10_000, k=2, family=family, repo_name="r")
        assert context.context == ()
        expected = "".join(
            comment_line("python", f"Path: {p}") + "".join(comment_line("python", line) for line in t.splitlines())
            for p, t in snippets
        )
        assert context.lead == expected
        assert all(line.startswith("#") for line in context.lead.splitlines())
    js = with_retrieved_context(_sample(language="javascript"), retriever, budget_chars=10_000, k=2, family="codellama")
    assert js.lead.startswith("// Path: ") and all(line.startswith("//") for line in js.lead.splitlines())


def test_every_family_with_repository_tokens_gets_the_token_layout() -> None:
    retriever = RepoRetriever(_repo())
    for name, spec in FAMILIES.items():
        context = with_retrieved_context(_sample(), retriever, budget_chars=10_000, k=2, family=name, repo_name="r")
        assert bool(context.context) == bool(spec.repo_name and spec.file_sep), name


def test_a_sample_without_a_path_or_matches_gets_no_context() -> None:
    retriever = RepoRetriever(_repo())
    no_path = Sample(mode="fim", prefix=_MAIN_PREFIX, middle="x", suffix=_MAIN_SUFFIX)
    assert with_retrieved_context(no_path, retriever, budget_chars=1000, k=3, family="qwen") == ContextSample(no_path)
    alone = RepoRetriever([_py("app/main.py", _MAIN_PREFIX)])
    result = with_retrieved_context(_sample(), alone, budget_chars=1000, k=3, family="qwen", repo_name="r")
    assert result.context == () and result.lead == ""


def test_neighbours_are_the_preceding_files_nearest_first_cut_at_a_line_and_filtered() -> None:
    from finetune.data.context.layout import neighbor_snippets

    docs = [Document(f"m{i}.py", "python", f"line_a_{i}\nline_b_{i}\n") for i in range(5)]
    near = neighbor_snippets(docs, n=2, chars=12, allowed={"m0.py", "m1.py", "m3.py", "m4.py"})
    assert near["m0.py"] == []
    assert [(s.path, s.text) for s in near["m2.py"]] == [("m1.py", "line_a_1\n"), ("m0.py", "line_a_0\n")]
    assert [s.path for s in near["m4.py"]] == ["m3.py", "m1.py"]  # m2.py is not allowed, so never shown
    assert neighbor_snippets(docs, n=0, chars=100)["m3.py"] == []
    assert [s.text for s in neighbor_snippets(docs, n=1, chars=100)["m1.py"]] == [docs[0].text]


def test_block_comment_closers_inside_snippets_cannot_end_the_comment() -> None:
    assert comment_line("css", "a { x: 1 } */ b") == "/* a { x: 1 } * / b */\n"
    assert comment_line("html", "<b>--></b>") == "<!--<b>-- ></b>-->\n"
    assert comment_line("python", "x = '*/ -->'") == "# x = '*/ -->'\n"  # line comments need no escaping
    for language, closer in [("css", "*/"), ("markdown", "-->")]:
        line = comment_line(language, f"{closer}{closer} code {closer}")
        assert line.count(closer) == 1 and line.rstrip("\n").endswith(closer)


def context_text(context, family: str) -> str:
    """The segments in front of the FIM block as text, with the family's token strings in place of token segments."""
    spec = FAMILIES[family]
    tokens = {"repo_name": spec.repo_name or "", "file_sep": spec.file_sep or ""}
    return "".join(tokens.get(kind, text) for kind, text in context.context)
