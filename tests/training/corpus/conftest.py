"""A miniature LibreOffice help tree (en-US) in the package's layout."""

from pathlib import Path

import pytest

PAGE = """<!DOCTYPE html>
<html lang="en-US" dir="ltr">
<head>
<meta http-equiv="Content-Type" content="text/html; charset=utf-8">
<title>{title}</title>
<script type="text/javascript" src="help.js" defer></script>
</head>
<body>
<header id="TopLeftHeader"><a class="logo" href="x.html"><p>LibreOffice 7.4 Help</p></a>
<div class="modules"><button type="button" id="modules">Module</button><nav id="modules-nav"></nav>
</div></header>
<aside class="rightside"><label for="accordion-1">Contents</label><div id="Contents"></div></aside>
<aside class="leftside"><div id="Index"><div class="index-label">Index  🔎︎ </div></div></aside>
<div id="DisplayArea" itemprop="softwareHelp">
{body}
</div>
<div id="SearchFrame"></div>
<footer><div id="DEBUG" class="debug"><p>This page is: /text/x.xhp</p></div></footer>
</body>
</html>
"""

FINDING = """<a name="bm_id1163670"></a><meta itemprop="keywords" content="finding, text">
<meta itemprop="keywords" content="searching, formats">
<h1 id="hd_id8568681">
<a name="finding"></a>Finding and Replacing in Writer
</h1>
<p class="paragraph">In text documents you can find words, formatting &amp; styles.</p>
<h2>The Find &amp; Replace dialog</h2>
<p class="paragraph">Use the shortcut <span class="switchinline"><span hidden="true"
 id="MACtextswriter_1" class="MAC"><span class="keycode">Command</span></span><span hidden="true"
 id="defaulttextswriter_1"><span class="keycode">Ctrl</span></span></span><span
 class="keycode"> + H</span> to open it.</p>
<span class="switch"><span hidden="true" id="CALCtextswriter_2" class="CALC">
<p class="paragraph">Searches formatted cell values.</p></span></span>
<div class="relatedtopics"><p class="related"><span class="emph">Related Topics</span></p>
<div class="relatedbody"><div class="embedded"><p class="embedded">
<a href="en-US/text/swriter/guide/navigator.html">Navigator for Text Documents</a></p></div></div>
</div>
"""

CELL_STYLES = """<meta itemprop="keywords" content="cell styles, applying">
<h1>Applying Cell Styles</h1>
<p class="paragraph">Select the cells, then choose <span class="emph">Styles - Default</span>.</p>
<div class="embedded"><a name="related"></a>
<p class="related"><span class="emph">Related Topics</span></p></div>
<div class="embedded"><p class="embedded"><a href="en-US/text/x.html">Other Page</a></p></div>
"""

NO_H1 = """<p class="paragraph">A page whose title comes from the title element.</p>"""

EMPTY = """<meta itemprop="keywords" content="nothing, here">
<h1>Empty Page</h1>
"""

# (page below en-US/text/, app field, entry text as escaped in bookmarks.js)
BOOKMARK_ENTRIES = [
    ("swriter/guide/finding.html", "WRITER", "Asian languages -- search options"),
    ("swriter/guide/finding.html", "WRITER", "Asian languages --  search options"),
    ("swriter/guide/finding.html", "CALC", "Find &amp; Replace -- &#34;styles&#34;"),
    ("scalc/guide/cellstyles.html", "CALC", "cell styles -- applying"),
    ("scalc/guide/cellstyles.html", "CALC", r"Operators -- Integer division (\\)"),
    ("scalc/guide/missing.html", "CALC", "missing page"),
    ("shared/01/empty.html", "SHARED", "nothing -- here"),
]
BOOKMARKS = (
    "var bookmarks = [\n"
    + "".join(
        f'{{url:"en-US/text/{page}?DbPAR={app}#bm_id{i}", app:"{app}", text:"{text}"}},\n'
        for i, (page, app, text) in enumerate(BOOKMARK_ENTRIES)
    )
    + "];\n"
)


def write_help_tree(root: Path) -> Path:
    """Write the miniature tree under `root` as the package does; return the en-US dir."""
    lang_dir = root / "usr/share/libreoffice/help/en-US"
    pages = {
        "text/swriter/guide/finding.html": PAGE.format(title="Finding", body=FINDING),
        "text/scalc/guide/cellstyles.html": PAGE.format(title="Styles", body=CELL_STYLES),
        "text/shared/01/00000100.html": PAGE.format(title="Help Basics", body=NO_H1),
        "text/shared/01/empty.html": PAGE.format(title="Empty", body=EMPTY),
        "text/notamodule/page.html": PAGE.format(title="Ignored", body=NO_H1),
    }
    for relative, content in pages.items():
        path = lang_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    (lang_dir / "bookmarks.js").write_text(BOOKMARKS, encoding="utf-8")
    return lang_dir


@pytest.fixture
def unpacked_package(tmp_path: Path) -> Path:
    """What `dpkg-deb -x` leaves: the tree under usr/share/libreoffice/help/en-US."""
    root = tmp_path / "unpacked"
    write_help_tree(root)
    return root


@pytest.fixture
def help_dir(unpacked_package: Path) -> Path:
    return unpacked_package / "usr/share/libreoffice/help/en-US"
