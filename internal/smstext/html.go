package smstext

import (
	"bytes"
	"strings"
	"unicode/utf8"

	"github.com/inbucket/html2text"
	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
	htmlcharset "golang.org/x/net/html/charset"
)

// decodeHTML converts HTML bytes to UTF-8: the MIME charset when there is
// one, else a BOM, valid UTF-8, or the document's own <meta charset>.
func decodeHTML(label string, b []byte) string {
	if strings.TrimSpace(label) == "" && !utf8.Valid(b) {
		_, label, _ = htmlcharset.DetermineEncoding(b, "text/html")
	}
	return decodeCharset(label, b)
}

// htmlToText renders HTML as plain text with html2text, after reshaping
// the tree the way a mail client would show it: hidden elements (preheader
// text, display:none) go, inline formatting is unwrapped so that it adds no
// stray spaces or *bold* marks, headings become paragraphs (no ***** rules),
// and each link becomes its label followed by its target in parentheses,
// "label (https://...)", or just the target when the label is empty or the
// target itself.
func htmlToText(s string) string {
	doc, err := html.Parse(strings.NewReader(s))
	if err != nil {
		// Nested deeper than x/net/html accepts (512): still read the text.
		return tokenText(s)
	}
	reshape(doc, 0, false)
	out, err := html2text.FromHTMLNode(doc)
	if err != nil {
		return tokenText(s)
	}
	return out
}

// tokenText is the plain text of HTML that cannot be parsed into a tree:
// its text tokens, outside elements that are not shown, with a line break
// at each block element.
func tokenText(s string) string {
	var b strings.Builder
	z := html.NewTokenizer(strings.NewReader(s))
	skip := 0
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			return b.String()
		case html.TextToken:
			if skip == 0 {
				b.Write(z.Text())
			}
		case html.StartTagToken, html.EndTagToken, html.SelfClosingTagToken:
			name, _ := z.TagName()
			switch a := atom.Lookup(name); a {
			case atom.Script, atom.Style, atom.Head, atom.Title, atom.Template:
				if tt == html.StartTagToken {
					skip++
				} else if tt == html.EndTagToken && skip > 0 {
					skip--
				}
			case atom.Br, atom.P, atom.Div, atom.Tr, atom.Li, atom.Table, atom.Blockquote,
				atom.H1, atom.H2, atom.H3, atom.H4, atom.H5, atom.H6:
				b.WriteByte('\n')
			}
		}
	}
}

// maxHTMLDepth bounds the element nesting that is rendered. Parsed HTML
// can nest as deep as its input is long, and both this rewrite and
// html2text recurse; no mail nests this deep for its text.
const maxHTMLDepth = 256

// reshape rewrites the children of n (see htmlToText); inLink says n is
// inside <a>, where an image stands for its alt text.
func reshape(n *html.Node, depth int, inLink bool) {
	if depth > maxHTMLDepth {
		for n.FirstChild != nil {
			n.RemoveChild(n.FirstChild)
		}
		return
	}
	for c := n.FirstChild; c != nil; {
		next := c.NextSibling
		switch c.Type {
		case html.CommentNode, html.DoctypeNode:
			n.RemoveChild(c)
		case html.ElementNode:
			switch {
			case hidden(c):
				n.RemoveChild(c)
			case c.DataAtom == atom.A && hasBlock(c):
				// A link around a whole block (newsletters): keep the
				// block's lines and put the target after them.
				reshape(c, depth+1, true)
				if t := linkLabel("", attr(c, "href")); t != "" {
					c.AppendChild(&html.Node{Type: html.TextNode, Data: "(" + t + ")"})
				}
				c.DataAtom, c.Data, c.Attr = atom.Div, "div", nil
			case c.DataAtom == atom.A:
				reshape(c, depth+1, true)
				replace(n, c, linkText(c))
			case c.DataAtom == atom.Img:
				alt := ""
				if inLink {
					alt = attr(c, "alt")
				}
				replace(n, c, alt)
			case inline(c):
				reshape(c, depth+1, inLink)
				for gc := c.FirstChild; gc != nil; {
					gnext := gc.NextSibling
					c.RemoveChild(gc)
					n.InsertBefore(gc, c)
					gc = gnext
				}
				n.RemoveChild(c)
			default:
				switch c.DataAtom {
				case atom.H1, atom.H2, atom.H3, atom.H4, atom.H5, atom.H6:
					c.DataAtom, c.Data = atom.P, "p"
				case atom.P:
					// Word and Outlook write every line as a margin-less
					// <p class=MsoNormal>: a line, not a paragraph.
					if strings.Contains(attr(c, "class"), "MsoNormal") {
						c.DataAtom, c.Data = atom.Div, "div"
					}
				}
				reshape(c, depth+1, inLink)
			}
		}
		c = next
	}
	mergeText(n)
}

// replace puts a text node with s in place of old.
func replace(parent, old *html.Node, s string) {
	if s != "" {
		parent.InsertBefore(&html.Node{Type: html.TextNode, Data: s}, old)
	}
	parent.RemoveChild(old)
}

// mergeText joins adjacent text nodes, so that html2text, which trims and
// separates each text node, sees "a<b>b</b>c" as one word.
func mergeText(n *html.Node) {
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if c.Type != html.TextNode || c.NextSibling == nil || c.NextSibling.Type != html.TextNode {
			continue
		}
		var b strings.Builder // not +=: thousands of runs would be quadratic
		b.WriteString(c.Data)
		for next := c.NextSibling; next != nil && next.Type == html.TextNode; next = c.NextSibling {
			b.WriteString(next.Data)
			n.RemoveChild(next)
		}
		c.Data = b.String()
	}
}

// linkText is what a simple link reads as in an SMS.
func linkText(a *html.Node) string {
	return linkLabel(strings.Join(strings.Fields(textContent(a)), " "), attr(a, "href"))
}

// linkLabel is label followed by the target of href, when it adds something.
func linkLabel(label, href string) string {
	href = strings.TrimSpace(href)
	lower := strings.ToLower(href)
	switch {
	case href == "", strings.HasPrefix(href, "#"), strings.HasPrefix(lower, "javascript:"),
		strings.HasPrefix(lower, "cid:"), strings.HasPrefix(lower, "data:"):
		return label
	case strings.HasPrefix(lower, "mailto:"):
		href, _, _ = strings.Cut(href[len("mailto:"):], "?")
	case strings.HasPrefix(lower, "tel:"):
		href = href[len("tel:"):]
	}
	if label == "" {
		return href
	}
	if sameLink(label, href) {
		return label
	}
	return label + " (" + href + ")"
}

// sameLink reports whether a link's label already shows its target, as in
// <a href="https://example.com/">example.com</a>.
func sameLink(label, href string) bool {
	norm := func(s string) string {
		s = strings.ToLower(s)
		for _, p := range []string{"https://", "http://", "www."} {
			s = strings.TrimPrefix(s, p)
		}
		return strings.TrimSuffix(s, "/")
	}
	return norm(label) == norm(href)
}

func textContent(n *html.Node) string {
	var b bytes.Buffer
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		switch {
		case n.Type == html.TextNode:
			b.WriteString(n.Data)
		case n.DataAtom == atom.Br:
			b.WriteByte(' ')
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return b.String()
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// hidden reports whether a mail client would not show n.
func hidden(n *html.Node) bool {
	switch n.DataAtom {
	case atom.Head, atom.Script, atom.Style, atom.Title, atom.Template, atom.Noscript, atom.Object, atom.Svg:
		return true
	}
	for _, a := range n.Attr {
		switch a.Key {
		case "hidden":
			return true
		case "style":
			st := strings.ToLower(strings.Join(strings.Fields(a.Val), ""))
			if strings.Contains(st, "display:none") || strings.Contains(st, "mso-hide:all") ||
				strings.Contains(st, "visibility:hidden") {
				return true
			}
		}
	}
	return false
}

// inline reports whether n is inline formatting, to be unwrapped. Unknown
// elements count as inline: Outlook's <o:p>, <v:*> and friends.
func inline(n *html.Node) bool {
	switch n.DataAtom {
	case atom.Span, atom.Font, atom.B, atom.Strong, atom.I, atom.Em, atom.U, atom.S, atom.Strike,
		atom.Small, atom.Big, atom.Sub, atom.Sup, atom.Mark, atom.Abbr, atom.Cite, atom.Code,
		atom.Kbd, atom.Samp, atom.Var, atom.Tt, atom.Q, atom.Label, atom.Time, atom.Ins, atom.Del,
		atom.Bdi, atom.Bdo, atom.Data, atom.Dfn, atom.Wbr, atom.Nobr:
		return true
	case 0:
		return true
	}
	return false
}

// hasBlock reports whether n contains an element that starts a new line.
func hasBlock(n *html.Node) bool {
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if c.Type != html.ElementNode {
			continue
		}
		switch c.DataAtom {
		case atom.Div, atom.P, atom.Table, atom.Tr, atom.Td, atom.Th, atom.Ul, atom.Ol, atom.Li,
			atom.H1, atom.H2, atom.H3, atom.H4, atom.H5, atom.H6, atom.Blockquote, atom.Pre, atom.Br:
			return true
		}
		if hasBlock(c) {
			return true
		}
	}
	return false
}
