//! Front ends: YAML model specs ([`yaml`]) and ONNX files ([`onnx`]) to a verified tensor
//! [`Graph`], plus weight-file readers ([`weights`]).
//!
//! Contract: [`load_model`] (and the per-format entry points) return a graph that passed
//! [`verify`](crate::tensor::verify()), or a [`FrontError`] that is a renderable miette
//! diagnostic: YAML problems point at line and column of the spec, graph problems name the node,
//! op and what was expected, and *every* problem found is reported at once (as related
//! diagnostics of [`FrontError::Invalid`]). No input makes a front end panic.

pub mod onnx;
pub mod onnx_consts;
pub mod weights;
pub mod yaml;

use std::path::Path;
use std::sync::Arc;

use miette::{NamedSource, SourceSpan};

use crate::tensor::{Graph, GraphError};
pub use weights::WeightsError;

/// A problem in a model source that is not a tensor-graph error (reported among the related
/// diagnostics of [`FrontError::Invalid`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error, miette::Diagnostic)]
pub enum SpecError {
    /// An attribute is missing, malformed, or does not apply to the op.
    #[error("node `{node}` ({op}): {message}")]
    #[diagnostic(code(hecc::spec::attribute))]
    Attribute {
        /// Node name.
        node: String,
        /// Op name as written.
        op: String,
        /// What is wrong.
        message: String,
        /// Where.
        #[label("{label}")]
        span: Option<SourceSpan>,
        /// Short label text.
        label: String,
        /// Suggestion.
        #[help]
        help: Option<String>,
    },
    /// A top-level problem of the spec (layers/graph keys, input declaration, outputs).
    #[error("{message}")]
    #[diagnostic(code(hecc::spec::structure))]
    Structure {
        /// What is wrong.
        message: String,
        /// Where.
        #[label("here")]
        span: Option<SourceSpan>,
        /// Suggestion.
        #[help]
        help: Option<String>,
    },
    /// The weights file could not be read.
    #[error("cannot load weights file `{path}`")]
    #[diagnostic(code(hecc::spec::weights_file))]
    WeightsFile {
        /// The weights path as written (or the default).
        path: String,
        /// Why.
        source: WeightsError,
        /// Where the path is written in the spec, if it is.
        #[label("weights file named here")]
        span: Option<SourceSpan>,
        /// Suggestion.
        #[help]
        help: Option<String>,
    },
}

/// One problem of an invalid model: a graph error or a spec error.
#[derive(Debug, Clone, PartialEq, thiserror::Error, miette::Diagnostic)]
pub enum Problem {
    /// A tensor-graph error from the builder or verifier.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Graph(#[from] GraphError),
    /// A source-level error.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Spec(#[from] SpecError),
}

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum FrontError {
    /// The model file could not be read.
    #[error("cannot read `{path}`: {message}")]
    #[diagnostic(code(hecc::front::io))]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        message: String,
    },
    /// The file extension is not a known model format.
    #[error("unsupported model file `{path}`: expected .yaml, .yml or .onnx")]
    #[diagnostic(code(hecc::front::extension))]
    Extension {
        /// The path.
        path: String,
    },
    /// The YAML text could not be parsed into a spec (syntax error, wrong type, unknown key).
    #[error("invalid model spec: {message}")]
    #[diagnostic(code(hecc::spec::syntax))]
    Yaml {
        /// serde_yaml's message without the location suffix.
        message: String,
        /// The spec text.
        #[source_code]
        src: Arc<NamedSource<String>>,
        /// The location reported by the parser.
        #[label("here")]
        span: Option<SourceSpan>,
    },
    /// The model was read but has problems; each one is a related diagnostic.
    #[error("model `{model}` is invalid ({} problem(s))", problems.len())]
    #[diagnostic(code(hecc::front::invalid))]
    Invalid {
        /// Model name.
        model: String,
        /// The source text, when the model is textual.
        #[source_code]
        src: Option<Arc<NamedSource<String>>>,
        /// Every problem found.
        #[related]
        problems: Vec<Problem>,
    },
    /// The bytes are not a decodable ONNX model.
    #[error("invalid ONNX file `{path}`: {message}")]
    #[diagnostic(
        code(hecc::onnx::decode),
        help("the file must be a binary ONNX ModelProto (e.g. written by onnx.save)")
    )]
    OnnxDecode {
        /// The path.
        path: String,
        /// The decoder's message.
        message: String,
    },
    /// ONNX nodes whose op type is not supported; every one is listed.
    #[error("ONNX model `{path}` has {} unsupported node(s): {}", nodes.len(),
        nodes.iter().map(|(n, o)| format!("`{n}` ({o})")).collect::<Vec<_>>().join(", "))]
    #[diagnostic(
        code(hecc::onnx::unsupported_op),
        help("{}", onnx::supported_ops_help())
    )]
    OnnxUnsupported {
        /// The path.
        path: String,
        /// `(node name, op type)` of every unsupported node, in graph order.
        nodes: Vec<(String, String)>,
    },
    /// A valid ONNX file whose graph hecc cannot take as a whole (several inputs, an input
    /// rank or type it does not handle, a constant output).
    #[error("ONNX model `{path}`: {message}")]
    #[diagnostic(code(hecc::onnx::model))]
    OnnxModel {
        /// The path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The ONNX model uses a supported op in an unsupported way.
    #[error("ONNX node `{node}` ({op_type}): {message}")]
    #[diagnostic(code(hecc::onnx::node))]
    OnnxNode {
        /// Node name.
        node: String,
        /// ONNX op type.
        op_type: String,
        /// What is wrong.
        message: String,
    },
}

impl FrontError {
    /// The problems of an [`FrontError::Invalid`] error (empty for other variants).
    pub fn problems(&self) -> &[Problem] {
        match self {
            FrontError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

/// Loads a model: `.yaml`/`.yml` specs (weights resolved next to the spec) or `.onnx` files.
/// The returned graph has passed the verifier.
pub fn load_model(path: &Path) -> Result<Graph, FrontError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let read_err = |e: std::io::Error| FrontError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    match ext {
        "yaml" | "yml" => {
            let text = std::fs::read_to_string(path).map_err(read_err)?;
            yaml::parse_spec(&text, &path.display().to_string(), path.parent())
        }
        "onnx" => {
            let bytes = std::fs::read(path).map_err(read_err)?;
            onnx::parse_onnx(&bytes, &path.display().to_string())
        }
        _ => Err(FrontError::Extension {
            path: path.display().to_string(),
        }),
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate to `word` within distance 2, if any.
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, c)| c)
}
