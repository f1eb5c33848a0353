//! onnxruntime called in-process through its C API: the baseline `pipe bench inference`
//! measures tract against.
//!
//! The node never runs onnxruntime; this module exists for the benchmark only. It binds the
//! C API with the `ort` crate in its `load-dynamic` mode, so nothing is downloaded or linked at
//! build time: the shared library is opened at run time from a path. The fixture venv's
//! onnxruntime wheel (`scripts/fixtures.sh`) carries one, `onnxruntime/capi/libonnxruntime.so.*`,
//! which [`library_of`] finds from the venv's Python; it is the same build the Python baseline and
//! the fixture references use.
//!
//! Sessions are configured as the Python baseline's: CPU only, one intra-op and one inter-op
//! thread, sequential execution, onnxruntime's default (full) graph optimizations.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use ort::{
    environment::Environment,
    session::{Session, SessionInputValue},
    value::{DynTensor, Tensor as OrtTensor},
};
use pipe_primitives::inference::{Tensor, TensorData};

/// The onnxruntime shared library inside the onnxruntime package that `python` imports.
pub fn library_of(python: &Path) -> anyhow::Result<PathBuf> {
    let out = Command::new(python)
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi'))",
        ])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} cannot import onnxruntime: {}",
        python.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let capi = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    let mut libs: Vec<PathBuf> = std::fs::read_dir(&capi)
        .with_context(|| format!("listing {}", capi.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .collect();
    libs.sort();
    libs.pop()
        .with_context(|| format!("no libonnxruntime.so in {}", capi.display()))
}

/// A loaded onnxruntime: one per process (the C API allows one environment).
pub struct Onnxruntime {
    env: Environment,
    /// The library's own version string (`OrtGetApiBase()->GetVersionString()`).
    pub version: String,
}

impl Onnxruntime {
    pub fn load(library: &Path) -> anyhow::Result<Self> {
        let env = ort::init_from(library)
            .with_context(|| format!("loading {}", library.display()))?
            .with_name("pipe-bench")
            .build()
            .context("creating the onnxruntime environment")?;
        Ok(Self {
            env,
            version: ort::info().to_string(),
        })
    }

    /// A session over these model bytes, configured as the module docs say.
    pub fn session(&self, model: &[u8]) -> anyhow::Result<OrtModel> {
        let session = Session::builder(&self.env)?
            .with_intra_threads(1)
            .map_err(ort::Error::<()>::from)?
            .with_inter_threads(1)
            .map_err(ort::Error::<()>::from)?
            .with_parallel_execution(false)
            .map_err(ort::Error::<()>::from)?
            .commit_from_memory(model)?;
        Ok(OrtModel { session })
    }
}

/// One model's session.
pub struct OrtModel {
    session: Session,
}

/// A numeric output read back from onnxruntime, by name.
pub struct Output {
    pub name: String,
    pub values: Vec<f64>,
}

impl OrtModel {
    /// onnxruntime values for these tensors, in the order the session declares its inputs.
    pub fn feeds(&self, tensors: &[Tensor]) -> anyhow::Result<Vec<DynTensor>> {
        self.session
            .inputs()
            .iter()
            .map(|input| {
                let t = tensors
                    .iter()
                    .find(|t| t.name == input.name())
                    .with_context(|| format!("no tensor for input `{}`", input.name()))?;
                let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
                Ok(match &t.data {
                    TensorData::Float32(v) => OrtTensor::from_array((shape, v.clone()))?.upcast(),
                    TensorData::Int64(v) => OrtTensor::from_array((shape, v.clone()))?.upcast(),
                    TensorData::String(v) => {
                        OrtTensor::from_string_array((shape, v.as_slice()))?.upcast()
                    }
                })
            })
            .collect()
    }

    /// Runs on prepared feeds; the outputs are dropped unread.
    pub fn run(&mut self, feeds: &[SessionInputValue<'_>]) -> anyhow::Result<()> {
        self.session.run(feeds)?;
        Ok(())
    }

    /// What a caller holding our tensors does: make the feeds, run, copy the numeric outputs
    /// out. Outputs that are not float or integer tensors (ZipMap's maps) are skipped.
    pub fn call(&mut self, tensors: &[Tensor]) -> anyhow::Result<Vec<Output>> {
        let feeds = self.feeds(tensors)?;
        let feeds: Vec<SessionInputValue<'_>> = feeds.iter().map(Into::into).collect();
        let outputs = self.session.run(&feeds[..])?;
        let mut read = Vec::new();
        for (name, value) in outputs.iter() {
            let values = if let Ok((_, v)) = value.try_extract_tensor::<f32>() {
                v.iter().map(|&x| x as f64).collect()
            } else if let Ok((_, v)) = value.try_extract_tensor::<i64>() {
                v.iter().map(|&x| x as f64).collect()
            } else {
                continue;
            };
            read.push(Output {
                name: name.to_string(),
                values,
            });
        }
        if read.is_empty() && outputs.len() > 0 {
            bail!("no numeric output to read");
        }
        Ok(read)
    }
}
