// edgert._edgert.Slot and inspect_packet: model slots that verify and apply
// update packets (docs/spec/update-packet.md). CPU module only: slots live in host
// memory on the device side. Also the server's format 2 stream encoder (range_encode_v2).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "edgert/edgert.h"
#include "packet/encode_v2.hpp"  // libedgert-internal: the server-side encoders are not in the device C API
#include "packet/encode_v3.hpp"

namespace edgert::py {

#if !defined(EDGERT_CUDA_MODULE)
namespace {

namespace pyb = pybind11;

// Borrowed read-only bytes of any buffer-protocol object (bytes, bytearray, memoryview, numpy).
struct Bytes {
  explicit Bytes(const pyb::buffer& obj) : info(obj.request()) {
    if (info.ndim > 1 || (info.ndim == 1 && info.strides[0] != info.itemsize)) {
      throw pyb::type_error("expected a contiguous bytes-like object");
    }
    size = static_cast<size_t>(info.size * info.itemsize);
  }
  const uint8_t* data() const { return static_cast<const uint8_t*>(info.ptr); }
  pyb::buffer_info info;
  size_t size = 0;
};

pyb::dict header_dict(const edgert_packet_header& h) {
  pyb::dict d;
  d["format_version"] = h.format_version;
  d["flags"] = h.flags;
  d["model_id"] = pyb::bytes(reinterpret_cast<const char*>(h.model_id), EDGERT_MODEL_ID_BYTES);
  d["base_version"] = h.base_version;
  d["target_version"] = h.target_version;
  d["tensor_count"] = h.tensor_count;
  d["payload_length"] = h.payload_length;
  d["full_snapshot"] = h.full_snapshot != 0;
  d["authenticated"] = h.authenticated != 0;
  d["signed"] = h.has_signature != 0;
  d["signature_length"] = h.signature_length;
  return d;
}

// entries: (bits, symbols, indices or None, numel) per directory entry -> the range-coded stream.
pyb::bytes range_encode_v2(const pyb::sequence& entries) {
  const size_t n = entries.size();
  std::vector<Bytes> symbols;
  std::vector<pyb::buffer_info> indices;
  std::vector<packet::StreamEntryV2> spec;
  symbols.reserve(n);
  indices.reserve(n);
  spec.reserve(n);
  for (size_t j = 0; j < n; ++j) {
    const std::string where = "range_encode_v2: entries[" + std::to_string(j) + "]";
    const pyb::object item = entries[j];
    if (!pyb::isinstance<pyb::tuple>(item) || pyb::len(item) != 4) {
      throw pyb::type_error(where + ": expected a tuple (bits, symbols, indices or None, numel)");
    }
    const pyb::tuple t = item.cast<pyb::tuple>();
    for (size_t k : {size_t{1}, size_t{2}}) {
      if (!pyb::isinstance<pyb::buffer>(t[k]) && !(k == 2 && t[k].is_none())) {
        throw pyb::type_error(where + (k == 1 ? ": symbols" : ": indices") +
                              ": expected a bytes-like object or array, got " +
                              std::string(pyb::str(pyb::type::handle_of(t[k]).attr("__name__"))));
      }
    }
    const auto bits = t[0].cast<uint32_t>();
    const size_t width = bits == 16 ? 2 : 1;  // other widths: the encoder's INVALID_ARGUMENT
    symbols.emplace_back(t[1].cast<pyb::buffer>());
    const pyb::buffer_info& s = symbols.back().info;
    const bool s16 = s.item_type_is_equivalent_to<uint16_t>() || s.item_type_is_equivalent_to<int16_t>() ||
                     s.format == "e";
    if (s.itemsize != 1 && !(width == 2 && s16)) {
      throw pyb::type_error(where + ": symbols: expected bytes or a uint8/int8 array (" +
                            (width == 2 ? "or uint16/float16, " : "") + "little-endian), got format '" + s.format +
                            "' itemsize " + std::to_string(s.itemsize));
    }
    if (symbols.back().size % width != 0) {
      throw pyb::value_error(where + ": " + std::to_string(symbols.back().size) + " symbol bytes for " +
                             std::to_string(bits) + "-bit symbols");
    }
    const uint64_t count = symbols.back().size / width;
    const bool sparse = !t[2].is_none();
    const int64_t* idx = nullptr;
    if (sparse) {
      indices.push_back(t[2].cast<pyb::buffer>().request());
      const pyb::buffer_info& i = indices.back();
      if (i.ndim != 1 || !i.item_type_is_equivalent_to<int64_t>() || (i.size > 1 && i.strides[0] != 8)) {
        throw pyb::type_error(where + ": indices: expected a contiguous 1-D int64 array, got format '" + i.format +
                              "' itemsize " + std::to_string(i.itemsize) + " ndim " + std::to_string(i.ndim));
      }
      if (static_cast<uint64_t>(i.size) != count) {
        throw pyb::value_error(where + ": " + std::to_string(i.size) + " indices for " + std::to_string(count) +
                               " symbols");
      }
      idx = static_cast<const int64_t*>(i.ptr);
    }
    spec.push_back({bits, sparse, symbols.back().data(), count, idx, t[3].cast<uint64_t>()});
  }
  std::vector<uint8_t> stream;
  edgert_status st;
  {
    pyb::gil_scoped_release release;
    st = packet::encode_stream_v2(spec.data(), spec.size(), &stream);
  }
  check(st, "range_encode_v2");
  return pyb::bytes(reinterpret_cast<const char*>(stream.data()), stream.size());
}

// steps: the format 3 coding steps as three equal-length 1-D arrays -> the rANS stream.
pyb::bytes rans_encode_v3(const pyb::array_t<uint8_t, pyb::array::c_style>& states,
                          const pyb::array_t<uint16_t, pyb::array::c_style>& starts,
                          const pyb::array_t<uint16_t, pyb::array::c_style>& freqs) {
  if (states.ndim() != 1 || starts.ndim() != 1 || freqs.ndim() != 1 || states.size() != starts.size() ||
      states.size() != freqs.size()) {
    throw pyb::value_error("rans_encode_v3: expected three 1-D arrays of equal length (uint8 states, uint16 starts, "
                           "uint16 freqs), got sizes " + std::to_string(states.size()) + ", " +
                           std::to_string(starts.size()) + ", " + std::to_string(freqs.size()));
  }
  std::vector<uint8_t> stream;
  edgert_status st;
  {
    pyb::gil_scoped_release release;
    st = packet::encode_rans_v3(states.data(), starts.data(), freqs.data(), static_cast<size_t>(states.size()),
                                &stream);
  }
  check(st, "rans_encode_v3");
  return pyb::bytes(reinterpret_cast<const char*>(stream.data()), stream.size());
}

class Slot {
 public:
  explicit Slot(const pyb::buffer& manifest) {
    Bytes m(manifest);
    check(edgert_slot_create(m.data(), m.size, &slot_), "Slot");
  }
  ~Slot() {
    edgert_receiver_free(receiver_);
    edgert_slot_free(slot_);
  }
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;

  void set_key(const pyb::buffer& key) {
    Bytes k(key);
    check(edgert_slot_set_key(slot_, k.data(), k.size), "Slot.set_key");
  }

  // root_key None removes the requirement.
  void set_trust(const pyb::object& root_key, uint64_t root_version, uint64_t min_release_version, uint64_t now) {
    if (root_key.is_none()) {
      check(edgert_slot_set_trust(slot_, nullptr), "Slot.set_trust");
      return;
    }
    Bytes k(root_key.cast<pyb::buffer>());
    edgert_trust t{};
    if (k.size != sizeof(t.root_key)) {
      throw pyb::value_error("Slot.set_trust: expected a 32-byte Ed25519 public key, got " + std::to_string(k.size) +
                             " bytes");
    }
    std::memcpy(t.root_key, k.data(), sizeof(t.root_key));
    t.root_version = root_version;
    t.min_release_version = min_release_version;
    t.fixed_time = now;
    check(edgert_slot_set_trust(slot_, &t), "Slot.set_trust");
  }

  pyb::object trust() {
    edgert_trust t{};
    if (edgert_slot_get_trust(slot_, &t) == EDGERT_ERR_NOT_FOUND) return pyb::none();
    pyb::dict d;
    d["root_key"] = pyb::bytes(reinterpret_cast<const char*>(t.root_key), sizeof(t.root_key));
    d["root_version"] = t.root_version;
    d["min_release_version"] = t.min_release_version;
    d["now"] = t.fixed_time;
    return d;
  }

  void set_hook(pyb::object fn) {
    hook_ = std::move(fn);
    check(edgert_slot_set_hook(slot_, hook_.is_none() ? nullptr : &Slot::trampoline, this), "Slot.set_hook");
  }

  // The next bytes of a packet arriving in pieces (edgert_receiver_update on the slot's receiver).
  void receive(const pyb::buffer& data) {
    Bytes d(data);
    if (receiver_ == nullptr) check(edgert_slot_receiver_create(slot_, &receiver_), "Slot.receive");
    pyb::gil_scoped_release release;
    edgert_receiver_update(receiver_, d.data(), d.size);
  }

  // received: the packet's bytes were fed through receive() (edgert_slot_apply_received).
  void apply(const pyb::buffer& packet, bool received) {
    Bytes p(packet);
    edgert_status st;
    if (received && receiver_ == nullptr) check(edgert_slot_receiver_create(slot_, &receiver_), "Slot.apply");
    {
      pyb::gil_scoped_release release;
      st = received ? edgert_slot_apply_received(slot_, receiver_, p.data(), p.size)
                    : edgert_slot_apply(slot_, p.data(), p.size);
    }
    if (hook_error_) {  // the packet was applied; the Python hook raised
      pyb::error_already_set err = std::move(*hook_error_);
      hook_error_.reset();
      throw err;
    }
    check(st, "Slot.apply");
  }

  uint64_t version() const { return edgert_slot_version(slot_); }
  pyb::bytes model_id() const {
    uint8_t id[EDGERT_MODEL_ID_BYTES];
    edgert_slot_model_id(slot_, id);
    return pyb::bytes(reinterpret_cast<const char*>(id), sizeof(id));
  }
  uint32_t tensor_count() const { return edgert_slot_tensor_count(slot_); }
  uint64_t weights_size() const { return edgert_slot_weights_size(slot_); }

  uint32_t resolve(const pyb::object& key) const {
    if (pyb::isinstance<pyb::int_>(key)) {
      const long long id = key.cast<long long>();
      if (id < 0 || id >= static_cast<long long>(tensor_count())) {
        throw pyb::index_error("tensor id " + std::to_string(id) + " out of range [0, " +
                               std::to_string(tensor_count()) + ")");
      }
      return static_cast<uint32_t>(id);
    }
    const std::string name = key.cast<std::string>();
    for (uint32_t i = 0; i < tensor_count(); ++i) {
      edgert_tensor_info info;
      check(edgert_slot_tensor_info(slot_, i, &info), "Slot");
      if (name == info.name) return i;
    }
    throw pyb::key_error("no tensor named '" + name + "'");
  }

  pyb::dict tensor_info(const pyb::object& key) const {
    edgert_tensor_info info;
    check(edgert_slot_tensor_info(slot_, resolve(key), &info), "Slot.tensor_info");
    pyb::dict d;
    d["name"] = std::string(info.name);
    d["dtype"] = info.dtype == EDGERT_F16 ? "float16" : "float32";
    d["shape"] = pyb::tuple(pyb::cast(std::vector<int64_t>(info.shape, info.shape + info.ndim)));
    d["numel"] = info.numel;
    d["byte_offset"] = info.byte_offset;
    d["byte_size"] = info.byte_size;
    return d;
  }

  pyb::tuple read_tensor(const pyb::object& key) {
    const uint32_t id = resolve(key);
    edgert_tensor_info info;
    check(edgert_slot_tensor_info(slot_, id, &info), "Slot.read_tensor");
    std::vector<pyb::ssize_t> shape(info.shape, info.shape + info.ndim);
    pyb::array out = info.dtype == EDGERT_F16 ? pyb::array(pyb::dtype("float16"), shape)
                                              : pyb::array(pyb::dtype("float32"), shape);
    uint64_t version = 0;
    edgert_status st;
    {
      pyb::gil_scoped_release release;
      st = edgert_slot_read_tensor(slot_, id, out.mutable_data(), static_cast<size_t>(info.byte_size), &version);
    }
    check(st, "Slot.read_tensor");
    return pyb::make_tuple(out, version);
  }

  pyb::tuple weights() {
    const void* w = nullptr;
    uint64_t version = 0;
    check(edgert_slot_acquire(slot_, &w, &version), "Slot.weights");
    pyb::bytes out(static_cast<const char*>(w), static_cast<size_t>(weights_size()));
    edgert_slot_release(slot_, w);
    return pyb::make_tuple(out, version);
  }

  void save(const std::string& path) {
    edgert_status st;
    {
      pyb::gil_scoped_release release;
      st = edgert_slot_save(slot_, path.c_str());
    }
    check(st, "Slot.save");
  }
  void load(const std::string& path) {
    edgert_status st;
    {
      pyb::gil_scoped_release release;
      st = edgert_slot_load(slot_, path.c_str());
    }
    check(st, "Slot.load");
  }

 private:
  static void trampoline(void* user, uint64_t version, const uint32_t* ids, size_t n) {
    Slot* self = static_cast<Slot*>(user);
    pyb::gil_scoped_acquire gil;
    try {
      self->hook_(version, std::vector<uint32_t>(ids, ids + n));
    } catch (pyb::error_already_set& e) {
      if (!self->hook_error_) self->hook_error_ = std::make_unique<pyb::error_already_set>(std::move(e));
    }
  }

  edgert_slot* slot_ = nullptr;
  edgert_receiver* receiver_ = nullptr;  // created by the first receive()
  pyb::object hook_ = pyb::none();
  std::unique_ptr<pyb::error_already_set> hook_error_;
};

}  // namespace
#endif

void bind_packet(pybind11::module_& m) {
#if !defined(EDGERT_CUDA_MODULE)
  namespace pyb = pybind11;
  pyb::class_<Slot>(m, "Slot",
                    "A model slot on the device: verifies and applies update packets with an atomic swap.\n"
                    "Slot(manifest: bytes). Weights start as zeros at version 0.")
      .def(pyb::init<const pyb::buffer&>(), pyb::arg("manifest"))
      .def("set_key", &Slot::set_key, pyb::arg("key"),
           "Require an HMAC-SHA256 under `key` (16..64 bytes; b'' removes the requirement).")
      .def("set_trust", &Slot::set_trust, pyb::arg("root_key"), pyb::arg("root_version") = 0,
           pyb::arg("min_release_version") = 0, pyb::arg("now") = 0,
           "Require release signatures under the pinned Ed25519 root key (32 bytes; None removes the\n"
           "requirement); now = 0 reads the wall clock for expiry checks. Raises edgert.EdgertError\n"
           "(EDGERT_ERR_BACKEND_UNAVAILABLE) in a build without EDGERT_SIGNATURES.")
      .def("trust", &Slot::trust,
           "dict(root_key, root_version, min_release_version, now) after the packets applied so far, or None.")
      .def("set_hook", &Slot::set_hook, pyb::arg("fn"),
           "Call fn(version, changed_tensor_ids) after each swap (None removes it).")
      .def("apply", &Slot::apply, pyb::arg("packet"), pyb::kw_only(), pyb::arg("received") = false,
           "Verify and apply one packet; raises edgert.PacketError (.status, .status_name) and leaves the\n"
           "active weights and version untouched on rejection. received=True: `packet` is exactly the bytes\n"
           "fed to receive() since the last apply, whose hashes are used (edgert_slot_apply_received).")
      .def("receive", &Slot::receive, pyb::arg("data"),
           "Feed the next bytes of a packet arriving in pieces: the SHA-256 of a release signature and the\n"
           "HMAC are computed on the way, so apply(packet, received=True) does not hash it again.")
      .def_property_readonly("version", &Slot::version)
      .def_property_readonly("model_id", &Slot::model_id)
      .def_property_readonly("tensor_count", &Slot::tensor_count)
      .def_property_readonly("weights_size", &Slot::weights_size)
      .def("tensor_info", &Slot::tensor_info, pyb::arg("tensor"), "dict(name, dtype, shape, numel, byte_offset, byte_size)")
      .def("read_tensor", &Slot::read_tensor, pyb::arg("tensor"),
           "(numpy array shaped as in the manifest, version) of the active model; tensor by id or name.")
      .def("weights", &Slot::weights, "(bytes of the whole active weight buffer, version)")
      .def("save", &Slot::save, pyb::arg("path"), "Atomic snapshot file (temp file, fsync, rename).")
      .def("load", &Slot::load, pyb::arg("path"), "Replace the state from a verified snapshot file.");
  m.def(
      "inspect_packet",
      [](const pyb::buffer& packet) {
        Bytes p(packet);
        edgert_packet_header h;
        check(edgert_packet_inspect(p.data(), p.size, &h), "inspect_packet");
        return header_dict(h);
      },
      pyb::arg("packet"), "Parse the fixed header (no CRC/MAC check) into a dict.");
  m.def("range_encode_v2", &range_encode_v2, pyb::arg("entries"),
        "The range-coded stream of an update packet of format 2 (docs/spec/update-packet.md), bit-exact with\n"
        "edgert.updates.packet._payload_v2_reference; the caller writes the directory. entries: one tuple\n"
        "(bits, symbols, indices, numel) per directory entry, in directory order: bits 16 (FP16_AC) or 8\n"
        "(INT8_AC); symbols the value section as in format 1 (little-endian fp16 patterns / int8 q: bytes,\n"
        "uint8/int8, or uint16/float16 for 16 bits); indices None (DENSE: n = numel) or int64 [n] strictly\n"
        "increasing in [0, numel) (GAP_AC). Raises ValueError naming the entry on bad input. Releases the GIL.");
  m.def("rans_encode_v3", &rans_encode_v3, pyb::arg("states"), pyb::arg("starts"), pyb::arg("freqs"),
        "The rANS stream of an update packet of format 3 (docs/spec/update-packet.md) from its coding steps, in\n"
        "decode order: step j codes [starts[j], starts[j] + freqs[j]) of 4096 on state states[j] (0..2).\n"
        "Bit-exact with edgert.updates.rans.encode_steps_reference; edgert.updates.rans builds the steps and the\n"
        "tables. states: uint8 [n], starts and freqs: uint16 [n] (other dtypes: TypeError). Raises ValueError\n"
        "naming the step on bad input. Releases the GIL.");
  m.def("signatures_available", []() { return edgert_signatures_available() != 0; },
        "True if this libedgert verifies release signatures (built with EDGERT_SIGNATURES).");
  m.def("signatures_backend", []() { return std::string(edgert_signatures_backend()); },
        "The Ed25519 implementation of this libedgert: 'sodium', 'openssl', or '' without signatures.");
  m.def("packet_max_format", &edgert_packet_max_format,
        "The newest update-packet format this libedgert decodes (announced to servers in HELLO).");
  m.def(
      "crc32c",
      [](const pyb::buffer& data, uint32_t crc) {
        Bytes d(data);
        return edgert_crc32c(crc, d.data(), d.size);
      },
      pyb::arg("data"), pyb::arg("crc") = 0, "CRC32C (Castagnoli) of data, continuing from crc.");
#else
  (void)m;
#endif
}

}  // namespace edgert::py
