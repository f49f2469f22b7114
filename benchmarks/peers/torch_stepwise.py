"""Peer: the PyTorch seq2seq tutorial's step-wise Bahdanau decoder, eager.

As "NLP From Scratch: Translation with a Sequence to Sequence Network and Attention"
writes it, with LSTMs where it has GRUs and a bidirectional encoder to match our models:
`EncoderRNN`, `BahdanauAttention` (`Va tanh(Wa query + Ua keys)`), and `AttnDecoderRNN`
whose `forward` calls `forward_step` once per target position (teacher forcing in
training, the argmax fed back in greedy decoding), then `log_softmax` and `NLLLoss`.
Gradients are clipped to norm 1 and Adam steps both modules, as our models train.
"""

import os

import numpy as np
import torch
from torch import nn
from torch.nn import functional


class EncoderRNN(nn.Module):
    def __init__(self, vocab_size, embedding_dim, units):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, units // 2, batch_first=True, bidirectional=True)

    def forward(self, token_ids):
        output, (hidden, cell) = self.lstm(self.embedding(token_ids))
        # (2, batch, units // 2) -> (1, batch, units): forward and backward concatenated
        hidden = torch.cat([hidden[0], hidden[1]], dim=-1).unsqueeze(0)
        cell = torch.cat([cell[0], cell[1]], dim=-1).unsqueeze(0)
        return output, (hidden, cell)


class BahdanauAttention(nn.Module):
    def __init__(self, units):
        super().__init__()
        self.Wa = nn.Linear(units, units)
        self.Ua = nn.Linear(units, units)
        self.Va = nn.Linear(units, 1)

    def forward(self, query, keys):
        scores = self.Va(torch.tanh(self.Wa(query) + self.Ua(keys)))  # (batch, source_len, 1)
        weights = functional.softmax(scores.squeeze(2).unsqueeze(1), dim=-1)
        context = torch.bmm(weights, keys)  # (batch, 1, units)
        return context, weights


class AttnDecoderRNN(nn.Module):
    def __init__(self, vocab_size, embedding_dim, units, start_id=1):
        super().__init__()
        self.start_id = start_id
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.attention = BahdanauAttention(units)
        self.lstm = nn.LSTM(embedding_dim + units, units, batch_first=True)
        self.out = nn.Linear(units, vocab_size)

    def forward(self, encoder_outputs, encoder_hidden, steps, target_tensor=None):
        batch = encoder_outputs.size(0)
        decoder_input = torch.full((batch, 1), self.start_id, dtype=torch.long)
        decoder_hidden = encoder_hidden
        decoder_outputs = []
        for i in range(steps):
            decoder_output, decoder_hidden = self.forward_step(
                decoder_input, decoder_hidden, encoder_outputs
            )
            decoder_outputs.append(decoder_output)
            if target_tensor is not None:
                decoder_input = target_tensor[:, i].unsqueeze(1)  # teacher forcing
            else:
                _, top = decoder_output.topk(1)
                decoder_input = top.squeeze(-1).detach()
        decoder_outputs = torch.cat(decoder_outputs, dim=1)
        return functional.log_softmax(decoder_outputs, dim=-1)

    def forward_step(self, token_ids, hidden, encoder_outputs):
        embedded = self.embedding(token_ids)  # (batch, 1, embedding_dim)
        query = hidden[0].permute(1, 0, 2)
        context, _ = self.attention(query, encoder_outputs)
        output, hidden = self.lstm(torch.cat((embedded, context), dim=2), hidden)
        return self.out(output), hidden


class TorchStepwise:
    def __init__(self, sizes, source, target_in, target_out, threads=None):
        torch.set_num_threads(threads or os.cpu_count())
        torch.manual_seed(0)
        self.encoder = EncoderRNN(sizes.vocab_size, sizes.embedding_dim, sizes.units)
        self.decoder = AttnDecoderRNN(sizes.vocab_size, sizes.embedding_dim, sizes.units)
        self.parameters = list(self.encoder.parameters()) + list(self.decoder.parameters())
        self.optimizer = torch.optim.Adam(self.parameters, lr=1e-3)
        self.criterion = nn.NLLLoss()
        self.source = torch.as_tensor(np.asarray(source), dtype=torch.long)
        # The decoder feeds its start token itself, then the previous target token
        # (the tutorial's teacher forcing): it never reads target_in.
        self.target_out = torch.as_tensor(np.asarray(target_out), dtype=torch.long)

    def train(self, steps):
        self.encoder.train()
        self.decoder.train()
        for _ in range(steps):
            self.optimizer.zero_grad()
            encoder_outputs, encoder_hidden = self.encoder(self.source)
            log_probabilities = self.decoder(
                encoder_outputs, encoder_hidden, self.target_out.size(1), self.target_out
            )
            loss = self.criterion(
                log_probabilities.view(-1, log_probabilities.size(-1)), self.target_out.view(-1)
            )
            loss.backward()
            nn.utils.clip_grad_norm_(self.parameters, 1.0)
            self.optimizer.step()
        return loss.item()

    def greedy(self, source, steps):
        self.encoder.eval()
        self.decoder.eval()
        with torch.no_grad():
            encoder_outputs, encoder_hidden = self.encoder(
                torch.as_tensor(np.asarray(source), dtype=torch.long)
            )
            log_probabilities = self.decoder(encoder_outputs, encoder_hidden, steps)
        return log_probabilities.argmax(-1).numpy()


def build(sizes, source, target_in, target_out, threads=None):
    return TorchStepwise(sizes, source, target_in, target_out, threads)
