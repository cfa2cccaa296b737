//! XML bodies, for the two XPath forms the Core Rule Set uses: `XML:/*` (the text of
//! the whole document, as libxml2's content of the root element) and `XML://@*`
//! (every attribute value). The parser (roxmltree) resolves no external entities,
//! so an XXE payload is inspected, never fetched.

/// What rules can see of an XML body.
#[derive(Debug, Default, Clone)]
pub struct XmlDoc {
    /// All text and CDATA of the document, in order.
    pub text: Vec<u8>,
    /// Every attribute's value.
    pub attributes: Vec<Vec<u8>>,
}

pub fn parse(input: &[u8]) -> Result<XmlDoc, String> {
    let s = std::str::from_utf8(input).map_err(|e| format!("XML parsing error: {e}"))?;
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(s, opts)
        .map_err(|e| format!("XML parsing error: {e}"))?;
    let mut out = XmlDoc::default();
    for n in doc.root().descendants() {
        if n.is_text() {
            out.text
                .extend_from_slice(n.text().unwrap_or("").as_bytes());
        }
        for a in n.attributes() {
            out.attributes.push(a.value().as_bytes().to_vec());
        }
    }
    Ok(out)
}

impl XmlDoc {
    /// The values an XPath selector gives; only `/*` and `//@*` are understood
    /// (anything else gives nothing).
    pub fn select<'a>(&'a self, xpath: &[u8]) -> Box<dyn Iterator<Item = &'a [u8]> + 'a> {
        match xpath {
            b"/*" => Box::new(std::iter::once(self.text.as_slice())),
            b"//@*" => Box::new(self.attributes.iter().map(Vec::as_slice)),
            _ => Box::new(std::iter::empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_attributes() {
        let d =
            parse(br#"<?xml version="1.0"?><a x="1"><b y="2">hi</b><![CDATA[ <s> ]]>there</a>"#)
                .expect("valid");
        assert_eq!(d.text, b"hi <s> there");
        assert_eq!(d.attributes, vec![b"1".to_vec(), b"2".to_vec()]);
        assert_eq!(d.select(b"//@*").count(), 2);
        assert!(parse(b"<a><b></a>").is_err());
        let xxe = br#"<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><a>&e;</a>"#;
        let _ = parse(xxe);
    }
}
