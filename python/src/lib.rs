//! Python bindings of hecc: compile a model (file or ONNX bytes) to a plan, read its report,
//! generate keys, encrypt numpy arrays, run a plan in process or on a `hecc serve` server, and
//! decrypt to numpy. Every hecc error becomes `hecc.HeccError` with hecc's message (and its
//! help, in parentheses). Long calls release the GIL.

use hecc::compile::{CompileOptions, LayoutChoice, ModelArgs};
use hecc::run::Session;
use hecc_passes::params::Security;
use numpy::{PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::path::PathBuf;
use std::time::Duration;

create_exception!(
    _native,
    HeccError,
    PyException,
    "An error reported by hecc."
);

/// hecc's message, its causes and its help, as one line.
fn err(e: miette::Report) -> PyErr {
    HeccError::new_err(hecc::report_text::error_line(&e))
}

fn json_to_py(py: Python<'_>, text: &str) -> PyResult<PyObject> {
    Ok(py.import("json")?.call_method1("loads", (text,))?.unbind())
}

fn security(insecure: bool) -> Security {
    if insecure {
        Security::InsecureNone
    } else {
        Security::Bits128
    }
}

/// A compiled plan: circuit, CKKS parameters and report.
#[pyclass(module = "hecc")]
#[derive(Clone)]
struct Plan {
    plan: hecc_passes::plan::Plan,
}

#[pymethods]
impl Plan {
    /// Reads a plan file written by `hecc compile` or `Plan.save`.
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<Plan> {
        Ok(Plan {
            plan: hecc::compile::read_plan(&path).map_err(err)?,
        })
    }

    /// Writes the plan file (atomically).
    fn save(&self, path: PathBuf) -> PyResult<()> {
        hecc::compile::write_plan(&self.plan, &path).map_err(err)
    }

    /// The plan file's text (JSON).
    fn to_json(&self) -> PyResult<String> {
        self.plan
            .to_json()
            .map_err(|e| HeccError::new_err(e.to_string()))
    }

    /// A plan from the text of a plan file.
    #[staticmethod]
    fn from_json(text: &str) -> PyResult<Plan> {
        Ok(Plan {
            plan: hecc_passes::plan::Plan::from_json(text)
                .map_err(|e| HeccError::new_err(e.to_string()))?,
        })
    }

    /// The plan's report as a dict (the JSON of `hecc report --json`).
    #[getter]
    fn report(&self, py: Python<'_>) -> PyResult<PyObject> {
        let text = serde_json::to_string(&self.plan.report)
            .map_err(|e| HeccError::new_err(e.to_string()))?;
        json_to_py(py, &text)
    }

    /// The report as `hecc report` prints it.
    fn report_text(&self) -> String {
        hecc::report_text::render(&self.plan.report)
    }

    /// Model name.
    #[getter]
    fn model(&self) -> String {
        self.plan.model.clone()
    }

    /// Images per encrypted batch.
    #[getter]
    fn batch(&self) -> u32 {
        self.plan.batch
    }

    /// Shape of one image of the input.
    #[getter]
    fn input_shape(&self) -> Vec<usize> {
        self.plan
            .inputs
            .first()
            .map(|t| t.shape.clone())
            .unwrap_or_default()
    }

    /// The plan's digest (hex): key and ciphertext files are bound to it.
    #[getter]
    fn digest(&self) -> PyResult<String> {
        let d = self
            .plan
            .digest()
            .map_err(|e| HeccError::new_err(e.to_string()))?;
        Ok(d.iter().map(|b| format!("{b:02x}")).collect())
    }

    fn __repr__(&self) -> String {
        format!(
            "hecc.Plan(model={:?}, batch={}, log_n={})",
            self.plan.model, self.plan.batch, self.plan.params.log_n
        )
    }
}

/// Loads a model given as a path (YAML spec or ONNX file) or as the bytes of an ONNX file.
fn load_graph(model: &Bound<'_, PyAny>) -> PyResult<hecc_ir::tensor::Graph> {
    if let Ok(bytes) = model.downcast::<PyBytes>() {
        return hecc_ir::front::onnx::parse_onnx(bytes.as_bytes(), "the ONNX bytes")
            .map_err(|e| err(miette::Report::new(e)));
    }
    let path: PathBuf = model.extract()?;
    hecc_ir::front::load_model(&path).map_err(|e| err(miette::Report::new(e)))
}

/// Compiles a model to a plan. `model`: a path to a YAML spec or an ONNX file, or the bytes of
/// an ONNX file. The options are those of `hecc compile`.
#[pyfunction]
#[pyo3(signature = (model, *, layout = "auto", batch = None, activation = None, relu_range = None,
    scale_bits = None, normalize = None, input_range = None, insecure = false))]
#[allow(clippy::too_many_arguments)]
fn compile(
    py: Python<'_>,
    model: &Bound<'_, PyAny>,
    layout: &str,
    batch: Option<u32>,
    activation: Option<String>,
    relu_range: Option<f64>,
    scale_bits: Option<u32>,
    normalize: Option<String>,
    input_range: Option<String>,
    insecure: bool,
) -> PyResult<Plan> {
    let mut g = load_graph(model)?;
    ModelArgs {
        normalize,
        input_range,
    }
    .apply(&mut g)
    .map_err(err)?;
    let layout: LayoutChoice = layout.parse().map_err(|e: String| HeccError::new_err(e))?;
    let mut opts = CompileOptions {
        layout,
        batch,
        activation: activation
            .as_deref()
            .map(hecc::compile::ActivationChoice::parse)
            .transpose()
            .map_err(err)?,
        security: security(insecure),
        ..Default::default()
    };
    if let Some(b) = scale_bits {
        opts.scale_bits = b;
    }
    if let Some(r) = relu_range {
        opts.relu_range = r;
        opts.range_override = true;
    }
    let compiled = py
        .allow_threads(|| hecc::compile::compile_graph(&g, &opts))
        .map_err(err)?;
    Ok(Plan {
        plan: compiled.plan,
    })
}

/// The plaintext model's outputs for `images` (an array of shape `(n, *input_shape)` in the
/// model's input domain): the reference an encrypted result is compared with.
#[pyfunction]
fn evaluate<'py>(
    py: Python<'py>,
    model: &Bound<'py, PyAny>,
    images: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, numpy::PyArray2<f64>>> {
    let g = load_graph(model)?;
    let arr = as_f64_array(py, images)?;
    let shape = arr.shape().to_vec();
    let values = arr.as_array().iter().copied().collect::<Vec<f64>>();
    let x = hecc_ir::tensor::Tensor::from_shape_vec(shape.clone(), values)
        .map_err(|e| HeccError::new_err(format!("{e}")))?;
    let out = py
        .allow_threads(|| hecc_ir::tensor::eval::eval_batch(&g, &[x]))
        .map_err(|e| HeccError::new_err(format!("{e}")))?;
    let first = out
        .into_iter()
        .next()
        .ok_or_else(|| HeccError::new_err("the model has no output"))?;
    let n = shape.first().copied().unwrap_or(1).max(1);
    let values: Vec<f64> = first.iter().copied().collect();
    let cols = values.len() / n;
    numpy::PyArray1::from_vec(py, values).reshape([n, cols])
}

fn as_f64_array<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
) -> PyResult<PyReadonlyArrayDyn<'py, f64>> {
    let np = py.import("numpy")?;
    let arr = np.call_method1("ascontiguousarray", (x, "float64"))?;
    arr.extract()
}

/// The party that holds the secret key: generates keys, encrypts, decrypts.
#[pyclass(module = "hecc")]
struct Client {
    client: hecc::client::Client,
    eval: Option<hecc::run::EvalKeySet>,
}

#[pymethods]
impl Client {
    /// A client of `plan` with fresh keys (from the OS generator).
    #[new]
    #[pyo3(signature = (plan, *, insecure = false))]
    fn new(py: Python<'_>, plan: &Plan, insecure: bool) -> PyResult<Client> {
        let p = plan.plan.clone();
        let (client, eval) = py
            .allow_threads(|| {
                let s = Session::with_security(p, insecure)?;
                hecc::client::Client::generate(s)
            })
            .map_err(err)?;
        Ok(Client {
            client,
            eval: Some(eval),
        })
    }

    /// A client with the keys of a key directory (`hecc keygen` or `Client.save_keys`).
    #[staticmethod]
    #[pyo3(signature = (plan, key_dir, *, insecure = false))]
    fn open(plan: &Plan, key_dir: PathBuf, insecure: bool) -> PyResult<Client> {
        let s = Session::with_security(plan.plan.clone(), insecure).map_err(err)?;
        let (client, _) = hecc::client::Client::open_key_dir(s, &key_dir, false).map_err(err)?;
        // A key directory may hold the secret key alone; evaluation keys that are there must
        // read back.
        let ek = key_dir.join(hecc::run::EVAL_KEYS_FILE);
        let eval = if ek.exists() {
            Some(hecc::run::read_eval_keys(client.session(), &ek).map_err(err)?)
        } else {
            None
        };
        Ok(Client { client, eval })
    }

    /// Writes `secret.key` (owner-only) and `eval.keys` into `key_dir`.
    fn save_keys(&self, key_dir: PathBuf) -> PyResult<()> {
        let eval = self
            .eval
            .as_ref()
            .ok_or_else(|| HeccError::new_err("this client holds no evaluation keys"))?;
        self.client.write_key_dir(eval, &key_dir).map_err(err)?;
        Ok(())
    }

    /// The evaluation-key file's bytes: what a server needs (no secret key in it).
    fn eval_keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let eval = self
            .eval
            .as_ref()
            .ok_or_else(|| HeccError::new_err("this client holds no evaluation keys"))?;
        Ok(PyBytes::new(py, &self.client.eval_keys_bytes(eval)))
    }

    /// Encrypts one batch: `images` of shape `(n, *plan.input_shape)` (or `(n, k)` with `k`
    /// the values per image), values in the model's input domain. Returns the inputs file's
    /// bytes (what `hecc encrypt` writes).
    fn encrypt<'py>(
        &mut self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let arr = as_f64_array(py, images)?;
        let n = *arr
            .shape()
            .first()
            .ok_or_else(|| HeccError::new_err("images must be an array of shape (n, ...)"))?;
        let values: Vec<f64> = arr.as_array().iter().copied().collect();
        let client = &mut self.client;
        let bytes = py
            .allow_threads(|| {
                let images = client.images_from_values(values, n)?;
                let x = client.encrypt(&images)?;
                client.inputs_bytes(&x)
            })
            .map_err(err)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Decrypts a result (an outputs file's bytes) to an array `(images, classes)`. With
    /// `request` (the inputs bytes that were sent), checks that the result answers it.
    #[pyo3(signature = (outputs, request = None))]
    fn decrypt<'py>(
        &self,
        py: Python<'py>,
        outputs: &[u8],
        request: Option<&[u8]>,
    ) -> PyResult<Bound<'py, numpy::PyArray2<f64>>> {
        let client = &self.client;
        let logits = py
            .allow_threads(|| {
                let o = hecc::client::outputs_from_bytes(outputs, "the encrypted outputs")?;
                let d = client.decrypt(&o, request.map(|r| ("the request", r)))?;
                Ok::<_, miette::Report>(d.logits)
            })
            .map_err(err)?;
        numpy::PyArray1::from_vec(py, logits.values).reshape([logits.images, logits.classes])
    }
}

/// The party that runs a plan with evaluation keys only.
#[pyclass(module = "hecc")]
struct Server {
    server: hecc::server::Server,
}

#[pymethods]
impl Server {
    /// A server of `plan` with a client's evaluation keys (bytes of an `eval.keys` file).
    #[new]
    #[pyo3(signature = (plan, eval_keys, *, insecure = false))]
    fn new(py: Python<'_>, plan: &Plan, eval_keys: &[u8], insecure: bool) -> PyResult<Server> {
        let p = plan.plan.clone();
        let server = py
            .allow_threads(|| {
                let s = Session::with_security(p, insecure)?;
                hecc::server::Server::from_key_bytes(s, eval_keys, "the evaluation keys")
            })
            .map_err(err)?;
        Ok(Server { server })
    }

    /// Runs the plan on a request (inputs bytes); returns the outputs bytes.
    fn run<'py>(&self, py: Python<'py>, request: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
        let server = &self.server;
        let out = py
            .allow_threads(|| {
                let x = server.inputs_from_bytes(request, "the request")?;
                let (o, _report) = server.run(x, &Default::default())?;
                server.outputs_bytes(&o)
            })
            .map_err(err)?;
        Ok(PyBytes::new(py, &out))
    }
}

/// A `hecc serve` server.
#[pyclass(module = "hecc")]
struct Remote {
    url: String,
}

#[pymethods]
impl Remote {
    /// A client of the server at `url` (`http://HOST:PORT`).
    #[new]
    fn new(url: &str) -> PyResult<Remote> {
        let r = hecc::remote::Remote::new(url).map_err(err)?;
        Ok(Remote {
            url: r.url().to_string(),
        })
    }

    /// The hosted plans, as dicts.
    fn plans(&self, py: Python<'_>) -> PyResult<PyObject> {
        let url = self.url.clone();
        let plans = py
            .allow_threads(|| hecc::remote::Remote::new(&url)?.plans())
            .map_err(err)?;
        let text = serde_json::to_string(&plans).map_err(|e| HeccError::new_err(e.to_string()))?;
        json_to_py(py, &text)
    }

    /// Opens a session for the plan named `plan` with evaluation-key bytes.
    fn open_session(
        &self,
        py: Python<'_>,
        plan: &str,
        eval_keys: &[u8],
    ) -> PyResult<RemoteSession> {
        let url = self.url.clone();
        let s = py
            .allow_threads(|| hecc::remote::Remote::new(&url)?.open_session_bytes(plan, eval_keys))
            .map_err(err)?;
        Ok(RemoteSession { s })
    }
}

/// An open session on a `hecc serve` server.
#[pyclass(module = "hecc")]
struct RemoteSession {
    s: hecc::remote::RemoteSession,
}

#[pymethods]
impl RemoteSession {
    /// Reads a session file (`hecc client open` or `RemoteSession.save`).
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<RemoteSession> {
        Ok(RemoteSession {
            s: hecc::remote::RemoteSession::load(&path).map_err(err)?,
        })
    }

    /// Writes the session file (owner-only: it holds the token).
    fn save(&self, path: PathBuf) -> PyResult<()> {
        self.s.save(&path).map_err(err)
    }

    /// Session id.
    #[getter]
    fn id(&self) -> String {
        self.s.session.clone()
    }

    /// Submits a request (inputs bytes); returns the job id.
    fn submit(&self, py: Python<'_>, inputs: &[u8]) -> PyResult<String> {
        let s = &self.s;
        Ok(py
            .allow_threads(|| s.submit_bytes(inputs))
            .map_err(err)?
            .job)
    }

    /// A job's state as a dict, after waiting up to `wait` seconds for it to finish.
    #[pyo3(signature = (job, wait = 0.0))]
    fn job(&self, py: Python<'_>, job: &str, wait: f64) -> PyResult<PyObject> {
        if !(wait.is_finite() && wait >= 0.0) {
            return Err(HeccError::new_err(format!(
                "wait must be a number of seconds, not {wait}"
            )));
        }
        let s = &self.s;
        let info = py.allow_threads(|| s.job(job, wait)).map_err(err)?;
        let text = serde_json::to_string(&info).map_err(|e| HeccError::new_err(e.to_string()))?;
        json_to_py(py, &text)
    }

    /// Waits for a job (at most `timeout` seconds) and returns its outputs bytes; a failed
    /// job raises `HeccError` with the server's reason.
    #[pyo3(signature = (job, timeout = None))]
    fn result<'py>(
        &self,
        py: Python<'py>,
        job: &str,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let timeout = match timeout {
            Some(t) if !(0.0..1e9).contains(&t) => {
                return Err(HeccError::new_err(format!(
                    "timeout must be a number of seconds, not {t}"
                )))
            }
            t => t.map(Duration::from_secs_f64),
        };
        let s = &self.s;
        let bytes = py
            .allow_threads(|| {
                s.wait(job, timeout, &mut |_| {})?;
                s.fetch_bytes(job)
            })
            .map_err(err)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Submits, waits and returns the outputs bytes.
    #[pyo3(signature = (inputs, timeout = None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        inputs: &[u8],
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let job = self.submit(py, inputs)?;
        self.result(py, &job, timeout)
    }

    /// Closes the session: the server deletes its keys, jobs and results.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let s = &self.s;
        py.allow_threads(|| s.close()).map_err(err)
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("HeccError", m.py().get_type::<HeccError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Plan>()?;
    m.add_class::<Client>()?;
    m.add_class::<Server>()?;
    m.add_class::<Remote>()?;
    m.add_class::<RemoteSession>()?;
    m.add_function(wrap_pyfunction!(compile, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    Ok(())
}
