package dev.edgekd.demo

import android.app.Application
import android.graphics.Bitmap
import android.net.Uri
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import dev.edgekd.core.ModelRejectedException
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.update
import kotlinx.coroutines.launch

enum class Mode { CAMERA, GALLERY }

data class UiState(
    val loading: Boolean = true,
    /** "name · precision · short hash" of the loaded model. */
    val model: String? = null,
    /** Why the model was refused (hash mismatch, missing files...) or an image failed. */
    val error: String? = null,
    val mode: Mode = Mode.CAMERA,
    val galleryImage: Bitmap? = null,
    val result: Classification? = null,
    /** The model card's summary for the "About this model" dialog (null until the model is loaded). */
    val about: String? = null,
)

/** Owns the classifier across configuration changes; everything runs on the device, offline. */
class DemoViewModel(application: Application) : AndroidViewModel(application) {
    private val _state = MutableStateFlow(UiState())
    val state: StateFlow<UiState> = _state.asStateFlow()

    @Volatile
    private var classifier: Classifier? = null

    init {
        viewModelScope.launch(Dispatchers.Default) {
            try {
                val c = Classifier.load(getApplication<Application>())
                classifier = c
                val about = aboutModelText(getApplication<Application>(), c.info.sha256)
                _state.update { it.copy(loading = false, model = c.info.describe(), about = about) }
            } catch (e: ModelRejectedException) {
                _state.update { it.copy(loading = false, error = e.message) }
            } catch (e: Exception) { // e.g. LiteRT refusing a corrupt flatbuffer
                _state.update { it.copy(loading = false, error = "Could not load the model: ${e.message}") }
            }
        }
    }

    fun setMode(mode: Mode) = _state.update {
        // a model refusal stays on screen; an image error is cleared by switching mode
        it.copy(mode = mode, result = null, error = if (classifier == null) it.error else null)
    }

    /** Camera analysis thread. */
    fun analyze(frame: Bitmap) {
        val c = classifier ?: return
        if (_state.value.mode != Mode.CAMERA) return
        val r = try {
            c.classify(frame)
        } catch (e: IllegalStateException) {
            return // a frame that arrived after onCleared() closed the classifier
        }
        _state.update { it.copy(result = r) }
    }

    fun classifyUri(uri: Uri) {
        val c = classifier ?: return
        viewModelScope.launch(Dispatchers.Default) {
            try {
                val bitmap = decodeImage(getApplication<Application>().contentResolver, uri)
                val r = c.classify(bitmap)
                _state.update { it.copy(mode = Mode.GALLERY, galleryImage = bitmap, result = r) }
            } catch (e: Exception) {
                _state.update { it.copy(result = null, galleryImage = null, error = "Could not classify the image: ${e.message}") }
            }
        }
    }

    fun clearImageError() {
        if (classifier != null) _state.update { it.copy(error = null) }
    }

    override fun onCleared() {
        classifier?.close()
        classifier = null
    }
}
