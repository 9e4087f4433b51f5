import sys, time, numpy as np, torch
torch.set_num_threads(1)
from edgert.mimo.channels import load_channels, sample_batch
from edgert.mimo.online import OnlineConfig, train_online
from edgert.mimo.detectors import make_detector, MMNet
K = int(sys.argv[6]) if len(sys.argv) > 6 else 25
cs = load_channels('/tmp/mimo_t/uma_t50.npz', nt=16)
seq = cs.sequences()[:1, :K].contiguous()  # [1, K, 16, 64, 16]
mod, snr = int(sys.argv[1]), float(sys.argv[2])
lo, hi = (16., 34.) if mod == 16 else (4., 22.)
pt = int(sys.argv[3])
t = time.perf_counter()
res = train_online(seq, OnlineConfig(modulation=mod, snr_db=(lo, hi), psi=int(sys.argv[7]) if len(sys.argv) > 7 else 200, order="time", phi_time=pt, warm_start=sys.argv[4], transfer_delta=float(sys.argv[5]), lr_time=float(sys.argv[8]) if len(sys.argv) > 8 else None))
print("train s", time.perf_counter() - t, "it/ch", res.iterations_per_channel, flush=True)
H = seq.reshape(-1, 64, 16)
det = res.detector()
ep = make_detector("ep64")
gen = torch.Generator().manual_seed(5)
b = sample_batch(H, snr, mod, 200, gen)
_, idx = det(H, b.y, b.sigma2, mod)
e_mm = (idx != b.indices).sum((1, 2)).reshape(K, 16).sum(1) / (16 * 200 * 16)
_, idx = ep(H, b.y, b.sigma2, mod)
e_ep = (idx != b.indices).sum((1, 2)).reshape(K, 16).sum(1) / (16 * 200 * 16)
# stale: the k=0 models used for every k
A0 = res.A[:1].expand(K, *res.A.shape[1:]).contiguous(); th0 = res.theta2[:1].expand(K, *res.theta2.shape[1:]).contiguous()
from edgert.mimo.online import OnlineResult
st = OnlineResult(A0, th0, res.iterations, res.final_loss, 0.0).detector()
_, idx = st(H, b.y, b.sigma2, mod)
e_st = (idx != b.indices).sum((1, 2)).reshape(K, 16).sum(1) / (16 * 200 * 16)
np.set_printoptions(precision=4, linewidth=200)
print("mmnet", e_mm.numpy(), float(e_mm.mean()))
#print("stale", e_st.numpy(), float(e_st.mean()))
#print("ep64 ", e_ep.numpy(), float(e_ep.mean()))
