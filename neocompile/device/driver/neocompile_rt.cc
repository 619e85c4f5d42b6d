// libneocompile_rt.so: the C API of include/neocompile_rt.h over the TVM Relax VM.
//
// Only tvm-ffi's C ABI (TVMFFI* functions) and its header-only C++ layer are used, never a C++ symbol exported by
// libtvm_ffi or libtvm_runtime, and every symbol but nrt_* is local (exports map). So this library, linked with its
// own libc++ statically, also runs in a process where Python's `tvm` wheel (built with libstdc++) is loaded: the
// dynamic loader then hands it that wheel's libtvm_ffi.so / libtvm_runtime.so (same sonames, same pinned versions)
// instead of the package's copies, and no C++ object or exception crosses between the two C++ runtimes.
//
// Link with -ltvm_runtime -ltvm_ffi under --no-as-needed (the runtime's static registrations, e.g. the Relax VM
// executable loader, must run); libtvm_runtime_extra.so beside this library (sort/top-k/random kernels) is loaded
// on first use unless those kernels are registered already.
#include "neocompile_rt.h"

#include <dlfcn.h>
#include <gnu/libc-version.h>
#include <sched.h>
#include <sys/stat.h>
#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>

#include <cxxabi.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace ffi = tvm::ffi;

#ifndef NRT_VERSION_TEXT
#define NRT_VERSION_TEXT "neocompile-rt 1"
#endif

#if defined(__x86_64__)
#define NRT_ARCH "x86_64"
#elif defined(__aarch64__)
#define NRT_ARCH "aarch64"
#elif defined(__arm__)
#define NRT_ARCH "armv7"
#else
#define NRT_ARCH "unknown"
#endif

namespace {

constexpr int kPooledAllocator = 2;  // tvm::runtime::memory::AllocatorType::kPooled
constexpr int kShareAllCores = -3;   // tvm::runtime::threading::ThreadGroup::kSpecifyThreadShareAllCore
constexpr size_t kAlign = 64;        // TVM's kAllocAlignment: what its kernels assume of a tensor's data

thread_local std::string last_error;

[[noreturn]] void Fail(const std::string& msg) { throw std::runtime_error(msg); }

struct AlignedAlloc {
  void AllocData(DLTensor* t) {
    size_t n = ffi::GetDataSize(*t);
    void* p = nullptr;
    if (posix_memalign(&p, kAlign, n == 0 ? kAlign : n) != 0) throw std::runtime_error("out of memory");
    t->data = p;
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

// A tensor over the caller's memory: nothing allocated, nothing freed.
struct BorrowAlloc {
  void* data;
  void AllocData(DLTensor* t) { t->data = data; }
  void FreeData(DLTensor*) {}
};

std::string Dirname(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

bool IsDir(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool IsFile(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  if (!in) return "";
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

std::vector<int> ParseVersion(const std::string& text) {
  std::vector<int> parts;
  std::istringstream ss(text);
  std::string part;
  while (std::getline(ss, part, '.')) parts.push_back(std::atoi(part.c_str()));
  return parts;
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + (shape[i] < 0 ? std::string("any") : std::to_string(shape[i]));
  return s + "]";
}

// Call f through its C ABI entry (safe_call), never its C++ one: ffi::Function's operator() takes the callee's
// cpp_call when it has one, and an exception thrown there, by another library's C++ runtime (the wheel's libstdc++
// or the TVM runtime's own libc++), can be neither caught nor unwound here. A failure is raised as this library's
// own ffi::Error.
ffi::Any SafeCallPacked(const ffi::Function& f, const ffi::AnyView* args, int32_t n) {
  ffi::Any result;
  auto* obj = const_cast<ffi::FunctionObj*>(static_cast<const ffi::FunctionObj*>(f.get()));
  if (obj->safe_call(obj, reinterpret_cast<const TVMFFIAny*>(args), n, reinterpret_cast<TVMFFIAny*>(&result)) != 0) {
    throw ffi::details::MoveFromSafeCallRaised();
  }
  return result;
}

template <typename... Args>
ffi::Any SafeCall(const ffi::Function& f, Args&&... args) {
  constexpr size_t n = sizeof...(Args);
  ffi::AnyView pack[n > 0 ? n : 1];
  ffi::PackedArgs::Fill(pack, std::forward<Args>(args)...);
  return SafeCallPacked(f, pack, static_cast<int32_t>(n));
}

// JSON values of compiled.meta (parsed by tvm-ffi's ffi.json.Parse).
std::optional<ffi::Map<ffi::String, ffi::Any>> AsObject(const ffi::Any& v) {
  if (auto m = v.try_cast<ffi::Map<ffi::String, ffi::Any>>()) return *m;
  return std::nullopt;
}

ffi::Any Get(const ffi::Any& obj, const char* key) {
  auto m = AsObject(obj);
  if (!m.has_value()) return ffi::Any(nullptr);
  auto it = m->find(ffi::String(key));
  return it == m->end() ? ffi::Any(nullptr) : (*it).second;
}

std::string GetString(const ffi::Any& obj, const char* key) {
  ffi::Any v = Get(obj, key);
  if (auto s = v.try_cast<ffi::String>()) return std::string(*s);
  return "";
}

// The directory holding this library, for libtvm_runtime_extra.so beside it.
std::string OwnDir() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&nrt_abi_version), &info) == 0 || info.dli_fname == nullptr) return ".";
  return Dirname(info.dli_fname);
}

void LoadExtraKernels() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (ffi::Function::GetGlobal("tvm.contrib.sort.argsort").has_value()) return;  // e.g. Python's tvm is loaded
    std::string path = OwnDir() + "/libtvm_runtime_extra.so";
    if (IsFile(path)) dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
  });
}

// The CPUs this process may run on: its affinity mask, else all the machine's.
std::vector<unsigned> UsableCpus() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  std::vector<unsigned> cpus;
  if (sched_getaffinity(0, sizeof(mask), &mask) == 0) {
    for (unsigned c = 0; c < CPU_SETSIZE; ++c) {
      if (CPU_ISSET(c, &mask)) cpus.push_back(c);
    }
  }
  unsigned n = std::thread::hardware_concurrency();
  for (unsigned c = 0; cpus.empty() && c < (n ? n : 1); ++c) cpus.push_back(c);
  return cpus;
}

int ParseThreads(const char* text, const char* what) {
  std::string s(text);
  bool digits = !s.empty() && s.size() <= 6 && s.find_first_not_of("0123456789") == std::string::npos;
  int value = digits ? std::atoi(s.c_str()) : 0;
  if (value < 1) Fail(std::string(what) + ": '" + s + "' is not valid; expected an integer >= 1");
  return value;
}

int DefaultThreads() {
  for (const char* name : {"NEOCOMPILE_NUM_THREADS", "TVM_NUM_THREADS"}) {
    const char* value = std::getenv(name);
    if (value != nullptr && *value != '\0') return ParseThreads(value, name);
  }
  return static_cast<int>(UsableCpus().size());
}

// TVM keeps one thread pool per calling thread. Size the calling thread's pool to n threads, free to run on every
// CPU of the mask (TVM would pin them; TVM_BIND_THREADS=0, set once unless the user set it, stops that).
thread_local int pool_threads = 0;
std::mutex env_mutex;

void UseThreads(int n) {
  if (pool_threads == n) return;
  {
    std::lock_guard<std::mutex> lock(env_mutex);
    if (std::getenv("TVM_BIND_THREADS") == nullptr) setenv("TVM_BIND_THREADS", "0", 0);
  }
  std::vector<unsigned> cpus = UsableCpus();
  ffi::Array<ffi::String> listed;
  for (int i = 0; i < n; ++i) listed.push_back(ffi::String(std::to_string(cpus[i % cpus.size()])));
  SafeCall(ffi::Function::GetGlobalRequired("runtime.config_threadpool"), kShareAllCores, n, listed);
  pool_threads = n;
}

}  // namespace

struct nrt_model {
  struct Port {
    std::string name, dtype;  // dtype "" and known=false: no compiled.meta
    std::vector<int64_t> shape;
    bool known = false;
  };
  std::recursive_mutex mu;
  std::string lib_path;
  ffi::Any vm;
  ffi::Function main;
  std::vector<ffi::Tensor> weights;
  std::vector<Port> inputs, outputs;
  bool outputs_known = false;
  std::vector<std::optional<ffi::Tensor>> input_values;
  std::vector<bool> borrowed;
  std::vector<ffi::Tensor> results;
  bool ran = false;
  int threads = 1;
};

namespace {

template <typename F>
int Guard(F&& body) {
  try {
    body();
    last_error.clear();
    return 0;
  } catch (const ffi::Error& e) {
    last_error = e.kind() + ": " + e.message();
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    const std::type_info* type = abi::__cxa_current_exception_type();
    last_error = std::string("unknown error (an exception of type ") + (type ? type->name() : "?") + ")";
  }
  return -1;
}

template <typename F>
int Locked(nrt_model* m, F&& body) {
  if (m == nullptr) {
    last_error = "the model handle is NULL";
    return -1;
  }
  return Guard([&] {
    std::lock_guard<std::recursive_mutex> lock(m->mu);
    body();
  });
}

template <typename T>
void NeedOut(T* out, const char* what) {
  if (out == nullptr) Fail(std::string(what) + " is NULL");
}

const nrt_model::Port& InputAt(nrt_model* m, int index) {
  if (index < 0 || static_cast<size_t>(index) >= m->inputs.size()) {
    Fail("input index " + std::to_string(index) + " is out of range: the model has " +
         std::to_string(m->inputs.size()) + " input(s)");
  }
  return m->inputs[index];
}

void CheckOutputIndex(nrt_model* m, int index) {
  if (!m->ran) Fail("no output yet: call nrt_run first");
  if (index < 0 || static_cast<size_t>(index) >= m->results.size()) {
    Fail("output index " + std::to_string(index) + " is out of range: the model has " +
         std::to_string(m->results.size()) + " output(s)");
  }
}

const nrt_model::Port& OutputPort(nrt_model* m, int index) {
  if (!m->outputs_known && !m->ran) Fail("the outputs are not known before the first run (no compiled.meta)");
  size_t count = m->outputs_known ? m->outputs.size() : m->results.size();
  if (index < 0 || static_cast<size_t>(index) >= count) {
    Fail("output index " + std::to_string(index) + " is out of range: the model has " + std::to_string(count) +
         " output(s)");
  }
  return m->outputs[index];
}

std::vector<nrt_model::Port> ReadPorts(const ffi::Any& list, const char* what) {
  std::vector<nrt_model::Port> ports;
  auto arr = list.try_cast<ffi::Array<ffi::Any>>();
  if (!arr.has_value()) Fail(std::string("compiled.meta: Model.") + what + " is not a list");
  for (const ffi::Any& item : *arr) {
    nrt_model::Port p;
    p.name = GetString(item, "name");
    p.dtype = GetString(item, "dtype");
    auto shape = Get(item, "shape").try_cast<ffi::Array<ffi::Any>>();
    if (p.name.empty() || p.dtype.empty() || !shape.has_value()) {
      Fail(std::string("compiled.meta: an entry of Model.") + what + " lacks its name, dtype or shape");
    }
    for (const ffi::Any& d : *shape) {
      if (auto v = d.as<int64_t>()) {
        p.shape.push_back(*v);
      } else {
        p.shape.push_back(-1);  // a named dimension ("N"): any size
      }
    }
    p.known = true;
    ports.push_back(std::move(p));
  }
  return ports;
}

// Checks from compiled.meta before any model code loads.
void CheckMeta(const ffi::Any& meta, const std::string& source) {
  ffi::Any req = Get(meta, "Requirements");
  std::string device = GetString(req, "TargetDeviceType");
  if (!device.empty() && device != "cpu") {
    Fail("Compiled model requires device type \"" + device + "\" but this runtime runs \"cpu\" (" + source + ")");
  }
  std::string arch = GetString(Get(meta, "Compilation"), "Arch");
  if (!arch.empty() && arch != NRT_ARCH) {
    Fail(source + " is compiled for " + arch + " but this runtime is " + NRT_ARCH +
         "; run it on a device of its architecture, or compile the model for this one");
  }
  std::string need = GetString(req, "MinGlibc");
  if (need.rfind("GLIBC_", 0) == 0) need = need.substr(6);
  std::string have = gnu_get_libc_version();
  if (!need.empty() && ParseVersion(need) > ParseVersion(have)) {
    Fail(source + " needs glibc " + need + " (compiled.meta MinGlibc) but this system has glibc " + have +
         "; compile the model for a TargetDevice whose reference OS matches this system");
  }
}

std::string ParamsPath(const std::string& lib_path) {
  size_t slash = lib_path.find_last_of('/');
  size_t dot = lib_path.find_last_of('.');
  bool has_ext = dot != std::string::npos && (slash == std::string::npos || dot > slash + 1);
  return (has_ext ? lib_path.substr(0, dot) : lib_path) + ".params";
}

std::vector<ffi::Tensor> LoadWeights(const std::string& lib_path, const ffi::Any& meta) {
  std::string path = ParamsPath(lib_path);
  std::string name = path.substr(path.find_last_of('/') + 1);
  if (!IsFile(path)) {
    if (GetString(Get(Get(meta, "Model"), "Weights"), "Storage") == "external") {
      Fail(name + ": the package's weights file is missing (compiled.meta Model.Weights says they are stored in " +
           name + " beside the model); unpack the whole package");
    }
    return {};
  }
  ffi::Map<ffi::String, ffi::Tensor> table;
  try {
    table = SafeCall(ffi::Function::GetGlobalRequired("runtime.LoadParamsFromFile"), path)
                .cast<ffi::Map<ffi::String, ffi::Tensor>>();
  } catch (const ffi::Error& e) {
    Fail(name + ": not a readable weights file (" + e.message() +
         "); the package is damaged: compile the model again or unpack the package anew");
  }
  size_t declared = 0;
  for (const auto& kv : table) {
    if (std::string(kv.first).rfind("main:", 0) == 0) ++declared;
  }
  std::vector<ffi::Tensor> weights;
  for (size_t i = 0; i < declared; ++i) {
    auto it = table.find("main:" + std::to_string(i));
    if (it == table.end()) Fail(name + ": the weights file lacks main:" + std::to_string(i) + "; the package is damaged");
    weights.push_back((*it).second);
  }
  return weights;
}

ffi::Function ModuleFunction(const ffi::Any& mod, const char* name, const std::string& what) {
  auto f = SafeCall(ffi::Function::GetGlobalRequired("ffi.ModuleGetFunction"), mod, name, true)
               .cast<ffi::Optional<ffi::Function>>();
  if (!f.has_value()) Fail(what);
  return *f;
}

void Flatten(const ffi::Any& v, std::vector<ffi::Tensor>* out) {
  if (auto t = v.as<ffi::Tensor>()) {
    out->push_back(*t);
  } else if (auto arr = v.as<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& e : *arr) Flatten(e, out);
  } else if (auto i = v.as<int64_t>()) {
    int64_t x = *i;
    ffi::Tensor t = ffi::Tensor::FromNDAlloc(AlignedAlloc(), ffi::ShapeView(nullptr, 0), DLDataType{kDLInt, 64, 1},
                                             DLDevice{kDLCPU, 0});
    std::memcpy(t.data_ptr(), &x, sizeof(x));
    out->push_back(t);
  } else if (auto f = v.as<double>()) {
    double x = *f;
    ffi::Tensor t = ffi::Tensor::FromNDAlloc(AlignedAlloc(), ffi::ShapeView(nullptr, 0),
                                             DLDataType{kDLFloat, 64, 1}, DLDevice{kDLCPU, 0});
    std::memcpy(t.data_ptr(), &x, sizeof(x));
    out->push_back(t);
  } else {
    Fail("the model returned a value of type " + v.GetTypeKey() + "; expected tensors or tuples of tensors");
  }
}

void Load(nrt_model* m, const std::string& path, int num_threads) {
  if (num_threads < 0) Fail("num_threads: " + std::to_string(num_threads) + " is not valid; expected 0 (the default) or an integer >= 1");
  m->threads = num_threads > 0 ? num_threads : DefaultThreads();
  std::string dir = IsDir(path) ? path : Dirname(path);
  m->lib_path = IsDir(path) ? path + "/compiled.so" : path;
  if (!IsFile(m->lib_path)) {
    Fail("'" + path + "' is not a neocompile package: " + m->lib_path +
         " does not exist; expected a package folder (compiled.meta, compiled.so, compiled.params) or its compiled.so");
  }
  ffi::Any meta(nullptr);
  std::string meta_path = dir + "/compiled.meta";
  if (IsFile(meta_path)) {
    std::string text = ReadText(meta_path);
    meta = SafeCall(ffi::Function::GetGlobalRequired("ffi.json.Parse"), text);
    if (!AsObject(meta).has_value()) Fail(meta_path + " is not a JSON object");
    CheckMeta(meta, "'" + path + "'");
    ffi::Any model = Get(meta, "Model");
    m->inputs = ReadPorts(Get(model, "Inputs"), "Inputs");
    m->outputs = ReadPorts(Get(model, "Outputs"), "Outputs");
    m->outputs_known = true;
  }
  LoadExtraKernels();
  ffi::Any exec = SafeCall(ffi::Function::GetGlobalRequired("ffi.ModuleLoadFromFile"), m->lib_path);
  ffi::Function load_exec = ModuleFunction(exec, "vm_load_executable",
                                           m->lib_path + " is not a Relax VM executable (no vm_load_executable)");
  m->vm = SafeCall(load_exec);
  SafeCall(ModuleFunction(m->vm, "vm_initialization", m->lib_path + ": the VM has no vm_initialization"),
           static_cast<int>(kDLCPU), 0, kPooledAllocator);
  m->main = ModuleFunction(m->vm, "main", m->lib_path + " has no function 'main'");
  m->weights = LoadWeights(m->lib_path, meta);
  if (!m->outputs_known) {  // a bare library: names from the VM, dtypes and shapes unknown
    int64_t arity = SafeCall(ModuleFunction(m->vm, "get_function_arity", "no get_function_arity"), ffi::String("main"))
                        .cast<int64_t>();
    ffi::Function param = ModuleFunction(m->vm, "get_function_param_name", "no get_function_param_name");
    for (int64_t i = 0; i + static_cast<int64_t>(m->weights.size()) < arity; ++i) {
      nrt_model::Port p;
      p.name = SafeCall(param, ffi::String("main"), i).cast<ffi::String>();
      m->inputs.push_back(std::move(p));
    }
  }
  m->input_values.assign(m->inputs.size(), std::nullopt);
  m->borrowed.assign(m->inputs.size(), false);
}

void SetInput(nrt_model* m, int index, const void* data, const char* dtype, int ndim, const int64_t* shape) {
  const nrt_model::Port& port = InputAt(m, index);
  if (dtype == nullptr) Fail("input '" + port.name + "': dtype is NULL");
  if (ndim < 0 || (ndim > 0 && shape == nullptr)) Fail("input '" + port.name + "': shape is NULL or ndim < 0");
  std::vector<int64_t> given(shape, shape + ndim);
  if (port.known) {
    if (port.dtype != dtype) {
      Fail("input '" + port.name + "' has dtype " + dtype + "; the model expects " + port.dtype);
    }
    bool match = given.size() == port.shape.size();
    for (size_t i = 0; match && i < given.size(); ++i) match = port.shape[i] < 0 || port.shape[i] == given[i];
    if (!match) Fail("input '" + port.name + "' has shape " + ShapeText(given) + "; the model was compiled for " + ShapeText(port.shape));
  }
  int64_t count = 1;
  for (int64_t d : given) {
    if (d < 0) Fail("input '" + port.name + "' has a negative dimension in shape " + ShapeText(given));
    count *= d;
  }
  if (data == nullptr && count > 0) Fail("input '" + port.name + "': data is NULL");
  DLDataType dl;
  try {
    dl = ffi::StringToDLDataType(dtype);
  } catch (const ffi::Error&) {
    Fail("input '" + port.name + "': '" + std::string(dtype) + "' is not a dtype");
  }
  ffi::ShapeView view(given.data(), given.size());
  DLDevice cpu{kDLCPU, 0};
  size_t nbytes = 0;
  if (data != nullptr && reinterpret_cast<uintptr_t>(data) % kAlign == 0) {
    m->input_values[index] = ffi::Tensor::FromNDAlloc(BorrowAlloc{const_cast<void*>(data)}, view, dl, cpu);
    m->borrowed[index] = true;
    return;
  }
  // Copied: into the handle's own buffer of the same shape when nothing else holds it, else a new one.
  std::optional<ffi::Tensor>& held = m->input_values[index];
  bool reuse = held.has_value() && !m->borrowed[index] && held->use_count() == 1 && held->dtype() == dl &&
               held->ndim() == ndim && std::equal(given.begin(), given.end(), held->shape().begin());
  if (!reuse) held = ffi::Tensor::FromNDAlloc(AlignedAlloc(), view, dl, cpu);
  nbytes = ffi::GetDataSize(*held->GetDLTensorPtr());
  if (nbytes > 0) std::memcpy(held->data_ptr(), data, nbytes);
  m->borrowed[index] = false;
}

void Run(nrt_model* m) {
  std::vector<ffi::AnyView> args;
  args.reserve(m->inputs.size() + m->weights.size());
  for (size_t i = 0; i < m->inputs.size(); ++i) {
    if (!m->input_values[i].has_value()) Fail("input '" + m->inputs[i].name + "' is not set; call nrt_set_input first");
    args.push_back(*m->input_values[i]);
  }
  for (const ffi::Tensor& w : m->weights) args.push_back(w);
  UseThreads(m->threads);
  m->results.clear();
  m->ran = false;
  ffi::Any ret = SafeCallPacked(m->main, args.data(), static_cast<int32_t>(args.size()));
  Flatten(ret, &m->results);
  for (const ffi::Tensor& t : m->results) {
    if (t.device().device_type != kDLCPU) Fail("an output of the model is not on the CPU");
    if (!t.IsContiguous()) Fail("an output of the model is not contiguous");
  }
  if (m->outputs_known && m->results.size() != m->outputs.size()) {
    Fail("the model returned " + std::to_string(m->results.size()) + " output(s); compiled.meta declares " +
         std::to_string(m->outputs.size()));
  }
  for (size_t i = 0; m->outputs_known && i < m->results.size(); ++i) {
    std::string got = std::string(ffi::DLDataTypeToString(m->results[i].dtype()));
    if (got != m->outputs[i].dtype) {
      Fail("output '" + m->outputs[i].name + "' of the model is " + got + "; compiled.meta declares " +
           m->outputs[i].dtype + ": the package is damaged");
    }
  }
  if (!m->outputs_known) {
    m->outputs.clear();
    for (size_t i = 0; i < m->results.size(); ++i) {
      nrt_model::Port p;
      p.name = "output_" + std::to_string(i);
      p.dtype = std::string(ffi::DLDataTypeToString(m->results[i].dtype()));
      m->outputs.push_back(std::move(p));
    }
  }
  m->ran = true;
}

size_t OutputBytes(const ffi::Tensor& t) { return ffi::GetDataSize(*t.GetDLTensorPtr()); }

const void* OutputData(const ffi::Tensor& t) {
  const DLTensor* dl = t.GetDLTensorPtr();
  return static_cast<const char*>(dl->data) + dl->byte_offset;
}

}  // namespace

extern "C" {

int nrt_abi_version(void) { return NRT_ABI_VERSION; }

const char* nrt_version(void) { return NRT_VERSION_TEXT; }

const char* nrt_last_error(void) { return last_error.c_str(); }

int nrt_load(const char* path, int num_threads, nrt_model** out) {
  if (out != nullptr) *out = nullptr;
  return Guard([&] {
    NeedOut(out, "out");
    if (path == nullptr || *path == '\0') Fail("path is empty; expected a package folder or its compiled.so");
    nrt_model* m = new nrt_model();
    try {
      Load(m, path, num_threads);
    } catch (...) {
      delete m;
      throw;
    }
    *out = m;
  });
}

int nrt_free(nrt_model* model) {
  return Guard([&] { delete model; });
}

int nrt_num_inputs(nrt_model* m, int* out) {
  return Locked(m, [&] {
    NeedOut(out, "out");
    *out = static_cast<int>(m->inputs.size());
  });
}

int nrt_num_outputs(nrt_model* m, int* out) {
  return Locked(m, [&] {
    NeedOut(out, "out");
    if (!m->outputs_known && !m->ran) Fail("the outputs are not known before the first run (no compiled.meta)");
    *out = static_cast<int>(m->outputs_known ? m->outputs.size() : m->results.size());
  });
}

int nrt_input_name(nrt_model* m, int index, const char** name) {
  return Locked(m, [&] {
    NeedOut(name, "name");
    *name = InputAt(m, index).name.c_str();
  });
}

int nrt_input_dtype(nrt_model* m, int index, const char** dtype) {
  return Locked(m, [&] {
    NeedOut(dtype, "dtype");
    *dtype = InputAt(m, index).dtype.c_str();
  });
}

int nrt_input_shape(nrt_model* m, int index, int* ndim, const int64_t** shape) {
  return Locked(m, [&] {
    NeedOut(ndim, "ndim");
    const nrt_model::Port& p = InputAt(m, index);
    *ndim = p.known ? static_cast<int>(p.shape.size()) : -1;
    if (shape != nullptr) *shape = p.shape.data();
  });
}

int nrt_input_index(nrt_model* m, const char* name, int* index) {
  return Locked(m, [&] {
    NeedOut(index, "index");
    std::string want = name ? name : "";
    std::string names;
    for (size_t i = 0; i < m->inputs.size(); ++i) {
      if (m->inputs[i].name == want) {
        *index = static_cast<int>(i);
        return;
      }
      names += (i ? ", '" : "'") + m->inputs[i].name + "'";
    }
    Fail("the model has no input '" + want + "'; its inputs are " + names);
  });
}

int nrt_output_name(nrt_model* m, int index, const char** name) {
  return Locked(m, [&] {
    NeedOut(name, "name");
    *name = OutputPort(m, index).name.c_str();
  });
}

int nrt_output_dtype(nrt_model* m, int index, const char** dtype) {
  return Locked(m, [&] {
    NeedOut(dtype, "dtype");
    *dtype = OutputPort(m, index).dtype.c_str();
  });
}

int nrt_set_input(nrt_model* m, int index, const void* data, const char* dtype, int ndim, const int64_t* shape) {
  return Locked(m, [&] { SetInput(m, index, data, dtype, ndim, shape); });
}

int nrt_input_borrowed(nrt_model* m, int index, int* out) {
  return Locked(m, [&] {
    NeedOut(out, "out");
    InputAt(m, index);
    *out = m->borrowed[index] ? 1 : 0;
  });
}

int nrt_run(nrt_model* m) {
  return Locked(m, [&] { Run(m); });
}

int nrt_output_shape(nrt_model* m, int index, int* ndim, int64_t* shape) {
  return Locked(m, [&] {
    NeedOut(ndim, "ndim");
    CheckOutputIndex(m, index);
    const ffi::Tensor& t = m->results[index];
    if (shape != nullptr) {
      if (*ndim < t.ndim()) {
        Fail("output " + std::to_string(index) + " has rank " + std::to_string(t.ndim()) + "; shape holds " +
             std::to_string(*ndim) + " value(s) (*ndim)");
      }
      for (int i = 0; i < t.ndim(); ++i) shape[i] = t.shape()[i];
    }
    *ndim = t.ndim();
  });
}

int nrt_output_bytes(nrt_model* m, int index, size_t* nbytes) {
  return Locked(m, [&] {
    NeedOut(nbytes, "nbytes");
    CheckOutputIndex(m, index);
    *nbytes = OutputBytes(m->results[index]);
  });
}

int nrt_output_data(nrt_model* m, int index, const void** data) {
  return Locked(m, [&] {
    NeedOut(data, "data");
    CheckOutputIndex(m, index);
    *data = OutputData(m->results[index]);
  });
}

int nrt_get_output(nrt_model* m, int index, void* dst, size_t nbytes) {
  return Locked(m, [&] {
    CheckOutputIndex(m, index);
    const ffi::Tensor& t = m->results[index];
    size_t need = OutputBytes(t);
    if (nbytes < need) {
      Fail("output " + std::to_string(index) + " ('" + m->outputs[index].name + "') needs " + std::to_string(need) +
           " bytes; the buffer holds " + std::to_string(nbytes));
    }
    if (need > 0) {
      NeedOut(dst, "dst");
      std::memcpy(dst, OutputData(t), need);
    }
  });
}

int nrt_set_num_threads(nrt_model* m, int n) {
  return Locked(m, [&] {
    if (n < 1) Fail("num_threads: " + std::to_string(n) + " is not valid; expected an integer >= 1");
    m->threads = n;
  });
}

int nrt_get_num_threads(nrt_model* m, int* out) {
  return Locked(m, [&] {
    NeedOut(out, "out");
    *out = m->threads;
  });
}

int nrt_lock(nrt_model* m) {
  return Guard([&] {
    if (m == nullptr) Fail("the model handle is NULL");
    m->mu.lock();
  });
}

int nrt_unlock(nrt_model* m) {
  return Guard([&] {
    if (m == nullptr) Fail("the model handle is NULL");
    m->mu.unlock();
  });
}

}  // extern "C"
