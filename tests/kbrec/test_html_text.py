import pytest

from kbrec.html_text import html_to_text


def test_blocks_become_lines_and_inline_elements_stay_in_line() -> None:
    html = (
        "<h2>Reset  your\n password</h2><p>Open <b>Settings</b>, then <a href='#'>Security</a>.</p>"
    )

    assert html_to_text(html) == "Reset your password\nOpen Settings, then Security."


def test_entities_are_decoded() -> None:
    assert html_to_text(
        "<p>Find &amp; Replace &lt;tag&gt; caf&eacute;&nbsp;bar &#34;x&#34;</p>"
    ) == ('Find & Replace <tag> café bar "x"')


def test_page_chrome_scripts_and_comments_are_dropped() -> None:
    html = """<!DOCTYPE html><html><head><title>Page title</title><style>p {}</style></head>
    <body><header>Site header</header><nav>Home | Help</nav><aside>Index</aside>
    <script>var x = 1;</script><noscript>Enable JavaScript</noscript><!-- a comment -->
    <main><p>Article text.</p></main><footer>Copyright</footer></body></html>"""

    assert html_to_text(html) == "Article text."


def test_hidden_elements_are_dropped() -> None:
    html = '<p>Shown<span hidden> hidden</span><span style="display: none"> gone</span>.</p>'

    assert html_to_text(html) == "Shown."


def test_lists_tables_and_line_breaks() -> None:
    html = """<ol><li>First step</li><li>Second
    step</li></ol><table><tr><th>Key</th><th>Action</th></tr>
    <tr><td>Ctrl+F</td><td>Find</td></tr></table>Line one<br>Line two"""

    assert html_to_text(html).splitlines() == [
        "First step",
        "Second step",
        "Key Action",
        "Ctrl+F Find",
        "Line one",
        "Line two",
    ]


def test_preformatted_text_keeps_its_lines() -> None:
    assert html_to_text("<pre>Sub Main\n    Print 1\nEnd Sub</pre>") == "Sub Main\nPrint 1\nEnd Sub"


@pytest.mark.parametrize("html", ["", "   ", "<p> </p>", "<script>x()</script>"])
def test_no_text(html: str) -> None:
    assert html_to_text(html) == ""


def test_plain_text_passes_through() -> None:
    assert html_to_text("just  text") == "just text"


def test_deeply_nested_html_does_not_hit_the_recursion_limit() -> None:
    html = "<div>" * 5000 + "deep" + "</div>" * 5000

    assert html_to_text(html) == "deep"
